"""Project exceptions. Each carries a message meant for a person; the CLI prints it on one line."""


class MaskwatchError(Exception):
    """Base class: anything maskwatch raises on purpose."""


class SourceError(MaskwatchError):
    """A camera, file, folder or stream could not be opened or read."""


class ModelError(MaskwatchError):
    """A model file is missing, corrupt, of the wrong shape or fails its checksum."""


class DownloadError(MaskwatchError):
    """A file could not be fetched into the cache."""


class DatasetError(MaskwatchError):
    """A training or evaluation dataset is empty, one-class or unreadable."""


class OutputError(MaskwatchError):
    """An output path cannot be written."""


class ImageTooLargeError(SourceError):
    """An image (or image file) is over the pixel or byte budget; refused before decoding."""


class SettingError(MaskwatchError, ValueError):
    """A setting (an option, or an argument from Python) is outside its allowed range."""


class MissingExtraError(MaskwatchError):
    """A feature needs an optional extra that is not installed; the message says how to add it."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the {extra} extra: pip install '.[{extra}]' in the maskwatch checkout"
        )


class Terminated(KeyboardInterrupt):
    """SIGTERM (how systemd and docker stop a service), raised where Ctrl-C raises
    KeyboardInterrupt so that it stops a run the same way: a watch completes its outputs, other
    work stops and removes its temporary files."""
