"""YuNet run by ONNX Runtime, decoded as OpenCV's cv2.FaceDetectorYN decodes it.

ONNX Runtime runs YuNet about twice as fast as OpenCV's DNN module on a CPU
(`benchmarks/bench_detect.py --detectors`), and detection is most of a video frame's cost. The
published model declares a fixed 640x640 input, which ONNX Runtime enforces; a copy with a free
height and width is made once (with the `onnx` package) and kept in the model cache beside the
original, used only when it hashes to the sha256 pinned in hub.py (else the conversion is used
from memory: importing onnx and converting take about 0.05 s). The faces are
cv2.FaceDetectorYN's (tested; OpenCV's Winograd convolutions differ in the second decimal of a
score). Feeding the network uint8 pixels through a Transpose and a Cast added to the graph,
instead of converting them here, was measured no faster.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np

from maskwatch import hub
from maskwatch.atomic import atomic_path, cannot_write
from maskwatch.errors import ModelError, OutputError

STRIDES = (8, 16, 32)
MAX_MODEL_BYTES = 64 << 20  # YuNet is 0.23 MB
DERIVED = "any-size-v1"  # names the cached copy; change it when _any_size_bytes changes
log = logging.getLogger("maskwatch")
TOP_K = 5000  # candidates kept for non-maximum suppression, as cv2.FaceDetectorYN's default


def _any_size_bytes(model: bytes) -> bytes:
    """`model` with the height and width of its input (and its outputs' lengths) made free."""
    import onnx  # only when the cached copy is missing: importing it takes ~0.1 s

    try:
        proto = onnx.load_from_string(model)
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
        for output in proto.graph.output:
            output.type.tensor_type.shape.dim[1].dim_param = "anchors"
        del proto.graph.value_info[:]  # shapes inferred for 640x640; ONNX Runtime infers anew
        return bytes(proto.SerializeToString())
    except Exception as exc:  # onnx raises protobuf's and its own error types
        raise ModelError(f"the face detector model is not a YuNet ONNX file ({exc})") from exc


def any_size_path(original: Path, sha256: str) -> Path:
    """Where the free-size copy of the model at `original`, whose sha256 is `sha256`, is cached."""
    return hub.cache_dir() / "derived" / f"{original.stem}-{DERIVED}-{sha256[:16]}.onnx"


def is_any_size_copy(copy: Path, original: Path) -> bool:
    """Whether `copy` is what detection would use for `original`: a regular file hashing to
    the sha256 pinned for the original's copy in hub.py."""
    try:
        expected = hub.ANY_SIZE_SHA256.get(hashlib.sha256(original.read_bytes()).hexdigest())
    except OSError:
        return False
    return expected is not None and _pinned_copy(copy, expected) is not None


def _pinned_copy(cached: Path, expected: str) -> bytes | None:
    """The bytes of `cached` when it is a regular file of a sane size hashing to `expected`
    (a FIFO put there would block, junk fill memory); None otherwise."""
    try:
        if cached.is_file() and cached.stat().st_size <= MAX_MODEL_BYTES:
            model = cached.read_bytes()
            if hashlib.sha256(model).hexdigest() == expected:
                return model
    except OSError:
        pass
    return None


def any_size_model(path: Path, fresh: bool = False) -> bytes:
    """The bytes of YuNet at `path` with a free input size, from the cache when made before
    (unless `fresh`: made again, and the cached copy replaced).

    Only a known original's copy is cached, and used only when it hashes to the sha256 pinned in
    hub.py; other models, and caches that cannot be written, cost the conversion each time."""
    model, unwritten = _any_size(path, fresh)
    if unwritten is not None and "is a folder" in str(unwritten):  # else: a read-only cache
        _say_once(logging.WARNING, f"{unwritten}; the face detector is converted in memory")
    return model


def make_any_size_copy(path: Path) -> None:
    """Make the cached free-size copy of YuNet at `path` again (`models --fetch`): a ModelError
    or an OutputError (with the system's reason) when it cannot be."""
    unwritten = _any_size(path, fresh=True)[1]
    if unwritten is not None:
        raise unwritten


def _any_size(path: Path, fresh: bool) -> tuple[bytes, OutputError | None]:
    """The free-size model, and why the cache could not take it (None when it did, or when
    nothing is cached for it)."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > MAX_MODEL_BYTES:
            limit = MAX_MODEL_BYTES >> 20
            raise ModelError(f"face detector model {path} is not a file of at most {limit} MB")
        original = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read face detector model {path}: {exc.strerror}") from exc
    digest = hashlib.sha256(original).hexdigest()
    cached = any_size_path(path, digest)
    expected = hub.ANY_SIZE_SHA256.get(digest)
    if expected is None:  # not a model we know: nothing to check a cached copy against
        return _any_size_bytes(original), None
    if not fresh and (model := _pinned_copy(cached, expected)) is not None:
        return model, None
    model = _any_size_bytes(original)
    if hashlib.sha256(model).hexdigest() != expected:
        _say_once(
            logging.INFO,
            f"this machine's onnx converts {path} differently from the pinned copy; "
            "the conversion is used from memory, not cached",
        )
        return model, None
    try:
        _store(cached, model)
    except OutputError as exc:
        return model, exc
    return model, None


_said: set[str] = set()


def _say_once(level: int, message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.log(level, message)


def _store(cached: Path, model: bytes) -> None:
    """Write the free-size copy in place of whatever is there, except a folder: OutputError."""
    if cached.is_dir() and not cached.is_symlink():
        raise OutputError(f"{cached} is a folder, left alone")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        if cached.is_symlink() or (cached.exists() and not cached.is_file()):
            cached.unlink()  # replaced, never written through (a FIFO would block)
    except OSError as exc:
        raise cannot_write(exc.filename or cached, exc) from exc
    with atomic_path(cached) as tmp:
        tmp.write_bytes(model)


def _free(shape: list[object]) -> bool:
    """Whether an NCHW input takes any height and width (ONNX Runtime shows a free dimension as
    its name or None, a fixed one as a number)."""
    return len(shape) == 4 and not isinstance(shape[2], int) and not isinstance(shape[3], int)


class YuNetSession:
    """One ONNX Runtime session of YuNet; `run` gives cv2.FaceDetectorYN's rows for an image.

    Not for several threads at once (it keeps its input buffer between frames)."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        wanted = [f"{kind}_{s}" for s in STRIDES for kind in ("cls", "obj", "bbox", "kps")]
        for fresh in (False, True):  # a cached copy that will not load or fit is made again
            try:
                self._session = ort.InferenceSession(
                    any_size_model(path, fresh),
                    sess_options=options,
                    providers=["CPUExecutionProvider"],
                )
            except ModelError:
                raise
            except Exception as exc:  # onnxruntime raises its own unexported exception types
                if fresh:
                    raise ModelError(f"cannot load face detector {path}: {exc}") from exc
                continue
            names = [o.name for o in self._session.get_outputs()]
            inputs = self._session.get_inputs()
            if sorted(names) == sorted(wanted) and len(inputs) == 1 and _free(inputs[0].shape):
                break
            if fresh:
                raise ModelError(f"face detector {path} is not YuNet: it outputs {names}")
        self._outputs = wanted
        self._input = self._session.get_inputs()[0].name
        self._blob = np.zeros((1, 3, 0, 0), np.float32)

    def _fill(self, image: np.ndarray) -> np.ndarray:
        """The network's input: the BGR image as planes, padded with black to multiples of 32."""
        height, width = image.shape[:2]
        padded = (-(-height // 32) * 32, -(-width // 32) * 32)
        if self._blob.shape[2:] != padded:
            self._blob = np.zeros((1, 3, *padded), np.float32)
        blob = self._blob
        for channel, plane in enumerate(cv2.split(image)):
            blob[0, channel, :height, :width] = plane
        blob[0, :, height:, :] = 0  # the last image of this padded size may have been larger
        blob[0, :, :height, width:] = 0
        return blob

    def run(self, image: np.ndarray, score_threshold: float, nms_threshold: float) -> np.ndarray:
        """Faces in a BGR uint8 image as rows (x, y, w, h, 10 landmark coordinates, score)."""
        blob = self._fill(image)
        try:
            results = self._session.run(self._outputs, {self._input: blob})
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise ModelError(
                f"the face detector failed on a {image.shape[1]}x{image.shape[0]} image: {exc}"
            ) from exc
        padded_width = blob.shape[3]
        rows = []
        for k, stride in enumerate(STRIDES):
            cls, obj, bbox, kps = (r[0] for r in results[4 * k : 4 * k + 4])
            keep = np.flatnonzero(cls[:, 0] * obj[:, 0] > score_threshold**2)  # a first cut
            score = np.sqrt(np.clip(cls[keep, 0], 0, 1) * np.clip(obj[keep, 0], 0, 1))
            keep, score = keep[score > score_threshold], score[score > score_threshold]
            if len(keep) == 0:
                continue
            row, col = np.divmod(keep, padded_width // stride)
            box, marks = bbox[keep], kps[keep]
            cx, cy = (col + box[:, 0]) * stride, (row + box[:, 1]) * stride
            w, h = np.exp(box[:, 2]) * stride, np.exp(box[:, 3]) * stride
            points = np.empty_like(marks)
            points[:, 0::2] = (marks[:, 0::2] + col[:, None]) * stride
            points[:, 1::2] = (marks[:, 1::2] + row[:, None]) * stride
            rows.append(np.column_stack([cx - w / 2, cy - h / 2, w, h, points, score]))
        if not rows:
            return np.zeros((0, 15), np.float32)
        found = np.concatenate(rows).astype(np.float32)
        keep_rows = cv2.dnn.NMSBoxes(
            found[:, :4].astype(np.int32).tolist(),
            found[:, 14].tolist(),
            score_threshold,
            nms_threshold,
            top_k=TOP_K,
        )
        found = found[np.asarray(keep_rows, np.int64).reshape(-1)]
        return found[np.argsort(-found[:, 14], kind="stable")]
