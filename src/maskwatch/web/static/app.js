// The browser's own webcam: frames (JPEG, sized down) go to the server over a WebSocket, one
// at a time; the faces that come back are drawn over the live video.
"use strict";
(() => {
  const SEND_WIDTH = 640;
  const POLICY_VIOLATION = 1008;  // the server's close code for a refused session
  const TRY_AGAIN_LATER = 1013;  // the server is busy (too many sessions)
  const RETRY_MS = 2000, BUSY_RETRY_MS = 15000;
  const video = document.getElementById("video");
  const overlay = document.getElementById("overlay");
  const grab = document.createElement("canvas");
  const state = { lastResult: null, frames: 0, sent: 0, sentAt: 0, times: [], refused: null };
  window.maskwatchPage = state;
  const $ = (id) => document.getElementById(id);

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return maskwatch.withToken(`${scheme}//${location.host}${location.pathname.replace(/[^/]*$/, "")}ws/detect`);
  }

  function draw(result) {
    const width = video.clientWidth, height = video.clientHeight;
    overlay.width = width;
    overlay.height = height;
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const sx = width / result.width, sy = height / result.height;
    ctx.font = "14px sans-serif";
    ctx.lineWidth = 3;
    for (const face of result.faces) {
      const [x1, y1, x2, y2] = face.box;
      const colour = maskwatch.colours[face.label] || "#c8c8c8";
      ctx.strokeStyle = colour;
      ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
      const caption = `${face.track !== null ? "#" + face.track + " " : ""}` +
        `${maskwatch.display[face.label] || "Face"} ${Math.round(face.confidence * 100)}%`;
      const w = ctx.measureText(caption).width + 8;
      const top = Math.max(0, y1 * sy - 20);
      ctx.fillStyle = colour;
      ctx.fillRect(x1 * sx, top, w, 20);
      ctx.fillStyle = "#fff";
      ctx.fillText(caption, x1 * sx + 4, top + 15);
    }
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
      state.sentAt = performance.now();
      socket.send(blob);  // the session's next frame: its answer says this number in "frame"
      state.sent += 1;
    }, "image/jpeg", 0.75);
  }

  function connect() {
    const socket = new WebSocket(socketUrl());
    state.sent = 0;  // frames are numbered from 0 in each session
    socket.binaryType = "arraybuffer";
    socket.onopen = () => { $("message").textContent = "streaming"; send(socket); };
    socket.onmessage = (message) => {
      const reply = JSON.parse(message.data);
      const now = performance.now();
      if (reply.error) {
        $("message").textContent = reply.error;
      } else {
        state.lastResult = reply;
        state.frames += 1;
        state.times.push(now);
        while (state.times.length > 30) state.times.shift();
        const fps = state.times.length > 1
          ? (state.times.length - 1) / ((now - state.times[0]) / 1000) : 0;
        $("fps").textContent = fps.toFixed(1);
        if (reply.frame === state.sent - 1) $("rtt").textContent = Math.round(now - state.sentAt);
        $("faces").textContent = reply.faces.length;
        draw(reply);
      }
      send(socket);
    };
    socket.onclose = (event) => {
      if (event.code === POLICY_VIOLATION) {  // refused (no or wrong token): retrying cannot help
        state.refused = event.reason || "this server needs a token";
        $("message").textContent = state.refused;
        return;
      }
      const wait = event.code === TRY_AGAIN_LATER ? BUSY_RETRY_MS : RETRY_MS;
      $("message").textContent =
        `${event.reason || "connection closed"}; retrying in ${wait / 1000} s`;
      setTimeout(connect, wait);
    };
  }

  async function start() {
    $("start").disabled = true;
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
      await video.play();
      connect();
    } catch (error) {
      $("start").disabled = false;
      $("message").textContent = navigator.mediaDevices
        ? `camera unavailable: ${error.message}`
        : "the camera needs HTTPS (or localhost) in this browser";
    }
  }

  async function serverCameras() {
    try {
      const cameras = await maskwatch.getJson("api/v1/cameras");
      if (!cameras.length) return;
      $("server-cameras").hidden = false;
      cameras.forEach((camera, i) => {
        const figure = document.createElement("figure");
        const img = document.createElement("img");
        img.src = maskwatch.withToken(`api/v1/cameras/${i + 1}/mjpeg`);
        img.alt = camera.name;
        const caption = document.createElement("figcaption");
        caption.id = `camera-${i + 1}`;
        figure.append(img, caption);
        $("streams").append(figure);
      });
      showCameras(cameras);
    } catch (error) {
      $("message").textContent = error.message;
    }
  }

  // A camera's caption says when it failed or its video ended (its last frame is not live).
  function showCameras(cameras) {
    cameras.forEach((camera, i) => {
      const caption = $(`camera-${i + 1}`);
      if (!caption) return;
      const note = camera.error || (camera.state === "running" ? "" : camera.state);
      caption.textContent = note ? `${camera.name}: ${note}` : camera.name;
    });
    if (cameras.some((camera) => camera.state === "starting" || camera.state === "running")) {
      setTimeout(() => maskwatch.getJson("api/v1/cameras").then(showCameras, () => {}), 2000);
    }
  }

  $("dashboard-link").href = maskwatch.withToken("dashboard");
  $("start").addEventListener("click", start);
  if (new URLSearchParams(location.search).has("autostart")) start();
  serverCameras();
})();
