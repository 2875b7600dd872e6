// The browser's own webcam: frames (JPEG, sized down) go to the server over a WebSocket, one
// at a time; the faces that come back are drawn over the live video. Start asks for the camera,
// Stop closes the socket and releases the camera. Replies may carry fields this page does not
// know; it reads only those it needs.
"use strict";
(() => {
  const SEND_WIDTH = 640;
  const POLICY_VIOLATION = 1008;  // the server's close code for a refused session
  const TRY_AGAIN_LATER = 1013;  // the server is busy (too many sessions)
  const RETRY_MS = 2000, BUSY_RETRY_MS = 15000;
  const UNSETTLED_FILL = "rgba(20, 20, 20, 0.8)";  // the dark, outlined label of a face still settling
  const video = document.getElementById("video");
  const overlay = document.getElementById("overlay");
  const grab = document.createElement("canvas");
  const state = {
    lastResult: null, frames: 0, sent: 0, sentAt: 0, times: [], refused: null,
    socket: null, stream: null, retry: null, running: false,
    labels: [],  // the label boxes last drawn, in CSS pixels of the overlay
  };
  window.maskwatchPage = state;
  const $ = (id) => document.getElementById(id);

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return maskwatch.withToken(`${scheme}//${location.host}${location.pathname.replace(/[^/]*$/, "")}ws/detect`);
  }

  // Where the picture is inside the video element (object-fit: contain may leave bars).
  function pictureRect() {
    const width = video.clientWidth, height = video.clientHeight;
    const scale = Math.min(width / video.videoWidth, height / video.videoHeight) || 0;
    const w = video.videoWidth * scale, h = video.videoHeight * scale;
    return { x: (width - w) / 2, y: (height - h) / 2, width: w, height: h };
  }

  // The label's box: over the face's top left corner, moved left, below the top edge or set
  // smaller so that it stays inside the picture.
  function placeLabel(ctx, caption, x1, y1, picture) {
    let size = picture.width < 480 ? 12 : 14;
    ctx.font = `${size}px system-ui, sans-serif`;
    while (ctx.measureText(caption).width + 8 > picture.width && size > 8) {
      size -= 1;
      ctx.font = `${size}px system-ui, sans-serif`;
    }
    const w = Math.min(ctx.measureText(caption).width + 8, picture.width), h = size + 6;
    const x = Math.max(picture.x, Math.min(x1, picture.x + picture.width - w));
    let y = y1 - h >= picture.y ? y1 - h : y1;
    y = Math.max(picture.y, Math.min(y, picture.y + picture.height - h));
    return { x, y, w, h, size };
  }

  function draw(result) {
    const dpr = window.devicePixelRatio || 1;
    const width = overlay.clientWidth, height = overlay.clientHeight;
    overlay.width = Math.round(width * dpr);
    overlay.height = Math.round(height * dpr);
    const ctx = overlay.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const picture = pictureRect();
    const sx = picture.width / result.width, sy = picture.height / result.height;
    const labels = [];
    for (const face of result.faces) {
      const [bx1, by1, bx2, by2] = face.box;
      const x1 = picture.x + bx1 * sx, y1 = picture.y + by1 * sy;
      const colour = maskwatch.colours[face.label] || "#c8c8c8";
      const settled = face.settled === true;
      ctx.strokeStyle = colour;
      ctx.lineWidth = settled ? 3 : 2;
      ctx.setLineDash(settled ? [] : [8, 6]);
      ctx.strokeRect(x1, y1, (bx2 - bx1) * sx, (by2 - by1) * sy);
      ctx.setLineDash([]);
      const caption = `${face.track != null ? "#" + face.track + " " : ""}` +
        `${maskwatch.display[face.label] || "Face"} ${Math.round(face.confidence * 100)}%`;
      const label = placeLabel(ctx, caption, x1, y1, picture);
      ctx.fillStyle = settled ? colour : UNSETTLED_FILL;
      ctx.fillRect(label.x, label.y, label.w, label.h);
      if (!settled) {
        ctx.lineWidth = 2;
        ctx.strokeRect(label.x + 1, label.y + 1, label.w - 2, label.h - 2);
      }
      ctx.fillStyle = "#fff";
      ctx.textBaseline = "middle";
      ctx.fillText(caption, label.x + 4, label.y + label.h / 2 + 1, label.w - 8);
      labels.push({ x: label.x, y: label.y, w: label.w, h: label.h, settled });
    }
    state.labels = labels;
  }

  function clear() {
    overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
    state.labels = [];
  }

  function send(socket) {
    if (socket.readyState > WebSocket.OPEN) return;  // closing or closed: connect() takes over
    if (socket.readyState !== WebSocket.OPEN || !video.videoWidth) {
      setTimeout(() => send(socket), 50);
      return;
    }
    const scale = Math.min(1, SEND_WIDTH / video.videoWidth);
    grab.width = Math.round(video.videoWidth * scale);
    grab.height = Math.round(video.videoHeight * scale);
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    grab.toBlob((blob) => {
      if (socket.readyState !== WebSocket.OPEN) return;
      state.sentAt = performance.now();
      socket.send(blob);  // the session's next frame: its answer says this number in "frame"
      state.sent += 1;
    }, "image/jpeg", 0.75);
  }

  function showRate(now, frame) {
    state.times.push(now);
    while (state.times.length > 30) state.times.shift();
    const fps = state.times.length > 1
      ? (state.times.length - 1) / ((now - state.times[0]) / 1000) : 0;
    $("fps").textContent = fps.toFixed(1);
    if (frame === state.sent - 1) $("rtt").textContent = Math.round(now - state.sentAt);
  }

  function connect() {
    state.retry = null;
    const socket = new WebSocket(socketUrl());
    state.socket = socket;
    state.sent = 0;  // frames are numbered from 0 in each session
    socket.binaryType = "arraybuffer";
    socket.onopen = () => { $("message").textContent = "streaming"; send(socket); };
    socket.onmessage = (message) => {
      if (socket !== state.socket) return;
      const reply = JSON.parse(message.data);
      if (reply.error) {
        $("message").textContent = reply.error;
      } else if (Array.isArray(reply.faces)) {
        state.lastResult = reply;
        state.frames += 1;
        showRate(performance.now(), reply.frame);
        $("faces").textContent = reply.faces.length;
        draw(reply);
      }
      send(socket);
    };
    socket.onclose = (event) => {
      if (socket !== state.socket || !state.running) return;  // stopped on purpose
      if (event.code === POLICY_VIOLATION) {  // refused (no or wrong token): retrying cannot help
        state.refused = event.reason || "this server needs a token";
        $("message").textContent = state.refused;
        return;
      }
      const wait = event.code === TRY_AGAIN_LATER ? BUSY_RETRY_MS : RETRY_MS;
      $("message").textContent =
        `${event.reason || "connection closed"}; retrying in ${wait / 1000} s`;
      state.retry = setTimeout(connect, wait);
    };
  }

  function fitVideo() {
    if (video.videoWidth) {
      $("stage").style.setProperty("--aspect", video.videoWidth / video.videoHeight);
    }
  }

  async function start() {
    $("start").disabled = true;
    $("message").textContent = "asking for the camera";
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
      video.srcObject = state.stream;
      await video.play();
      fitVideo();
      state.running = true;
      $("stage").classList.add("live");
      $("stop").disabled = false;
      connect();
    } catch (error) {
      release();
      $("start").disabled = false;
      $("message").textContent = navigator.mediaDevices
        ? `camera unavailable: ${error.message}`
        : "the camera needs HTTPS (or localhost) in this browser";
    }
  }

  function release() {
    if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
    state.stream = null;
    video.srcObject = null;
  }

  function stop() {
    state.running = false;
    clearTimeout(state.retry);
    state.retry = null;
    if (state.socket) state.socket.close(1000, "stopped");
    state.socket = null;
    release();
    clear();
    $("stop").disabled = true;
    $("start").disabled = false;
    $("fps").textContent = "0.0";
    $("rtt").textContent = "-";
    $("faces").textContent = "0";
    $("stage").classList.remove("live");
    state.times = [];
    $("message").textContent = "stopped; the camera is released";
  }

  // Server cameras, with their errors (a camera can fail after the page has loaded).
  async function serverCameras() {
    try {
      const cameras = await maskwatch.getJson("api/v1/cameras");
      if (!cameras.length) return;
      $("server-cameras").hidden = false;
      cameras.forEach((camera, i) => {
        let figure = $("streams").children[i];
        if (!figure) {
          figure = document.createElement("figure");
          const img = document.createElement("img");
          // a failed camera has no stream (503): its caption says why
          if (!camera.error) img.src = maskwatch.withToken(`api/v1/cameras/${i + 1}/mjpeg`);
          img.alt = camera.name;
          const caption = document.createElement("figcaption");
          caption.id = `camera-${i + 1}`;
          figure.append(img, caption);
          $("streams").append(figure);
        }
      });
      showCameras(cameras);
    } catch (error) {
      if (!state.refused) $("message").textContent = error.message;  // the refusal says more
    }
  }

  // A camera's caption says when it failed or its video ended (its last frame is not live).
  function showCameras(cameras) {
    cameras.forEach((camera, i) => {
      const caption = $(`camera-${i + 1}`);
      if (!caption) return;
      const note = camera.error || (camera.state === "running" ? "" : camera.state);
      caption.textContent = note ? `${camera.name}: ${note}` : camera.name;
      caption.classList.toggle("error", Boolean(camera.error));
      caption.parentElement.classList.toggle("failed", Boolean(camera.error));
    });
  }

  $("dashboard-link").href = maskwatch.withToken("dashboard");
  maskwatch.legend($("key"), ["mask", "no_mask", "incorrect", "uncertain"]);
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  video.addEventListener("loadedmetadata", fitVideo);
  window.addEventListener("resize", () => { if (state.lastResult && state.running) draw(state.lastResult); });
  if (new URLSearchParams(location.search).has("autostart")) start();
  serverCameras();
  setInterval(serverCameras, 5000);
})();
