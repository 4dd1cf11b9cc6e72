// microturn browser client (native protocol v1, docs/protocol.md). Plain JS, no build step.
// Microphone -> AudioWorklet (16 kHz PCM16, 20 ms chunks) -> WebSocket; camera -> one JPEG per micro-turn;
// agent audio -> a jitter buffer on the AudioContext timeline; a live timeline, the transcript and latency.
"use strict";

const $ = (id) => document.getElementById(id);
const TARGET_BUFFER = 0.15; // s of agent audio queued ahead of playback
const MAX_BUFFER = 0.6; // s: beyond this, chunks are dropped to keep latency bounded
const CATCH_UP = 0.1; // s over the target at which silent chunks are skipped (catching up costs no speech)
const SPEECH_RMS = 0.02; // microphone level above which the user is speaking
const END_SILENCE = 0.3; // s under the level after which the user's speech has ended
const TIMELINE_S = 10; // seconds shown on the timeline
const HEADER = 16; // bytes before the PCM16 of an agent audio frame

const state = {
  ws: null, ctx: null, mic: null, cam: null, node: null, camTimer: null,
  delta: 0.2, sent: 0, // samples sent (16 kHz): the session's audio clock
  playAt: 0, // AudioContext time at which the next agent chunk starts
  levels: [], // [session time, rms] of the user's microphone
  agentAudio: [], // [start, end] of voiced agent windows (session time)
  words: [], // {w, start, end} agent words
  lastLoud: null, // performance.now() of the last loud microphone chunk
  speechEnded: null, // performance.now() when the user's speech ended, waiting for the agent's answer
  latencies: [],
  agentLine: null,
};

// ---------------------------------------------------------------- connection
function token() {
  const m = location.hash.match(/token=([^&]+)/);
  return m ? decodeURIComponent(m[1]) : undefined;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/stream`);
  ws.binaryType = "arraybuffer";
  // only the current socket speaks to the page: an old session's late words, audio and close are not this one's
  const mine = (f) => (ev) => { if (state.ws === ws) f(ev); };
  ws.onmessage = mine((ev) => (typeof ev.data === "string" ? onJson(JSON.parse(ev.data)) : onAudio(ev.data)));
  ws.onclose = mine((ev) => {
    status(`closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
    stopMedia();
    state.ws = null;
    $("start").disabled = false; // a new session once this one has ended
  });
  ws.onerror = mine(() => status("connection error"));
  state.ws = ws;
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function onJson(m) {
  switch (m.type) {
    case "hello":
      $("model").textContent = m.model ? `${m.model.name}${m.model.trained === false ? " (untrained)" : ""}` : "?";
      send({ type: "session.start", sample_rate: 16000, token: token() });
      break;
    case "session.started":
      state.delta = m.delta;
      status("listening");
      startMedia().catch((e) => { line(`microphone/camera: ${e.message}`, "error"); send({ type: "session.end" }); });
      break;
    case "text.delta": agentText(m.text); break;
    case "word": state.words.push(m); break;
    case "event":
      line(m.kind === "delegate" ? `asks the background model: ${m.text}`
        : `background answer: ${m.text ?? "(failed: " + m.error + ")"}`, "event");
      break;
    case "stats":
      $("step").textContent = m.step_ms == null ? "–" : `${m.step_ms.toFixed(1)} ms`;
      $("overruns").textContent = m.overruns;
      $("ahead").textContent = `${(m.ahead_s * 1000).toFixed(0)} ms`;
      break;
    case "error": line(`error ${m.code}: ${m.message}`, "error"); break;
    case "session.ended": status("session ended"); break;
  }
}

// ---------------------------------------------------------------- agent audio: a jitter buffer
function onAudio(buf) {
  const view = new DataView(buf);
  if (buf.byteLength < HEADER || String.fromCharCode(...new Uint8Array(buf, 0, 4)) !== "MTAU") return;
  const startMs = view.getUint32(8, true);
  const voiced = (view.getUint32(12, true) & 1) === 1;
  const pcm = new Int16Array(buf, HEADER);
  const start = startMs / 1000;
  if (voiced) {
    state.agentAudio.push([start, start + pcm.length / 16000]);
    if (state.speechEnded !== null) {
      recordLatency(performance.now() - state.speechEnded);
      state.speechEnded = null;
    }
  }
  schedule(pcm, voiced);
}

function schedule(pcm, voiced) {
  const ctx = state.ctx;
  if (!ctx) return;
  const now = ctx.currentTime;
  if (state.playAt < now) state.playAt = now + TARGET_BUFFER; // underrun (or first chunk): rebuild the buffer
  const backlog = state.playAt - now;
  if (backlog > MAX_BUFFER || (!voiced && backlog > TARGET_BUFFER + CATCH_UP)) return; // drop: catch up
  const buffer = ctx.createBuffer(1, pcm.length, 16000);
  const data = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
  const src = ctx.createBufferSource();
  src.buffer = buffer;
  src.connect(ctx.destination);
  src.start(state.playAt);
  state.playAt += buffer.duration;
  $("buffer").textContent = `${((state.playAt - now) * 1000).toFixed(0)} ms`;
}

// ---------------------------------------------------------------- microphone and camera
async function startMedia() {
  const ws = state.ws; // the session this media is for: one that ends during a permission prompt gets none
  const gone = (stream) => {
    if (state.ws === ws) return false;
    stream.getTracks().forEach((t) => t.stop());
    return true;
  };
  const wantCam = $("camera").checked;
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    video: wantCam ? { width: 320, height: 240 } : false,
  });
  if (gone(stream)) return;
  if (state.ctx) state.ctx.close(); // the last session's (kept after Stop so its final audio could play out)
  state.ctx = new AudioContext();
  await state.ctx.audioWorklet.addModule("/static/worklet.js");
  if (gone(stream)) return;
  const source = state.ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(state.ctx, "mic-capture");
  const mute = state.ctx.createGain();
  mute.gain.value = 0; // keep the worklet pulled by the graph without playing the microphone
  source.connect(node).connect(mute).connect(state.ctx.destination);
  node.port.onmessage = (ev) => onMic(ev.data);
  state.mic = stream;
  state.node = node;
  if (wantCam) startCamera(stream);
  $("stop").disabled = false;
}

function onMic({ pcm, rms }) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.ws.send(pcm);
  state.sent += pcm.byteLength / 2;
  state.levels.push([state.sent / 16000, rms]);
  const now = performance.now();
  if (rms > SPEECH_RMS) {
    state.lastLoud = now;
    state.speechEnded = null;
  } else if (state.lastLoud !== null && now - state.lastLoud > END_SILENCE * 1000) {
    state.speechEnded = state.lastLoud; // the speech ended at its last loud chunk
    state.lastLoud = null;
  }
}

function startCamera(stream) {
  const video = $("preview");
  video.parentElement.hidden = false;
  video.srcObject = stream;
  video.play();
  const canvas = document.createElement("canvas");
  canvas.width = 160;
  canvas.height = 120;
  const g = canvas.getContext("2d");
  state.camTimer = setInterval(() => {
    if (video.readyState < 2) return;
    g.drawImage(video, 0, 0, canvas.width, canvas.height);
    const url = canvas.toDataURL("image/jpeg", 0.7);
    send({ type: "frame", jpeg: url.slice(url.indexOf(",") + 1) });
  }, state.delta * 1000); // one frame per micro-turn
}

function stopMedia() {
  clearInterval(state.camTimer);
  if (state.mic) state.mic.getTracks().forEach((t) => t.stop());
  if (state.node) state.node.port.onmessage = null;
  state.mic = state.node = null;
  $("stop").disabled = true;
}

// ---------------------------------------------------------------- transcript, latency, timeline
function status(text) { $("status").textContent = text; }

function line(text, cls) {
  const div = document.createElement("div");
  div.className = cls;
  div.textContent = text;
  $("transcript").appendChild(div);
  $("transcript").scrollTop = $("transcript").scrollHeight;
  if (cls !== "agent") state.agentLine = null;
  return div;
}

function agentText(text) {
  if (!state.agentLine) state.agentLine = line("agent:", "agent");
  state.agentLine.textContent += text;
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

function recordLatency(ms) {
  state.latencies.push(ms);
  const sorted = [...state.latencies].sort((a, b) => a - b);
  $("latency").textContent = `${ms.toFixed(0)} ms`;
  $("latency-median").textContent = `${sorted[Math.floor(sorted.length / 2)].toFixed(0)} ms (${sorted.length} turns)`;
}

function drawTimeline() {
  const canvas = $("timeline");
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const now = state.sent / 16000;
  const t0 = Math.max(0, now - TIMELINE_S);
  const x = (t) => ((t - t0) / TIMELINE_S) * W;
  g.clearRect(0, 0, W, H);
  g.fillStyle = "#8b98a5";
  g.font = "11px system-ui";
  for (let s = Math.ceil(t0); s <= now; s++) g.fillText(`${s}s`, x(s) + 2, H - 3);
  g.fillStyle = "#4cc38a"; // the user's voice level (top row)
  for (const [t, rms] of state.levels) {
    if (t < t0) continue;
    const h = Math.min(1, rms * 8) * 55;
    g.fillRect(x(t - 0.02), 62 - h, Math.max(1, (0.02 / TIMELINE_S) * W), h);
  }
  g.fillStyle = "rgba(108,182,255,0.35)"; // agent speech (bottom row)
  for (const [a, b] of state.agentAudio) if (b > t0) g.fillRect(x(a), 72, x(b) - x(a), 55);
  g.fillStyle = "#6cb6ff";
  let free = -Infinity; // labels that would overlap the previous one are skipped
  for (const w of state.words) {
    if (w.end <= t0 || x(w.start) < free) continue;
    g.fillText(w.w, x(w.start) + 1, 100);
    free = x(w.start) + g.measureText(w.w).width + 4;
  }
  trim(t0);
  requestAnimationFrame(drawTimeline);
}

function trim(t0) {
  const keep = t0 - 1;
  while (state.levels.length && state.levels[0][0] < keep) state.levels.shift();
  while (state.agentAudio.length && state.agentAudio[0][1] < keep) state.agentAudio.shift();
  while (state.words.length && state.words[0].end < keep) state.words.shift();
}

// ---------------------------------------------------------------- controls
$("start").onclick = () => {
  $("start").disabled = true;
  Object.assign(state, { sent: 0, playAt: 0, levels: [], agentAudio: [], words: [], latencies: [] });
  status("connecting");
  connect();
};
$("stop").onclick = () => {
  const ws = state.ws;
  send({ type: "session.end" });
  stopMedia();
  status("ending");
  setTimeout(() => { // a server that never ends it: leave it, and let a new session start at once
    if (!ws || state.ws !== ws) return;
    state.ws = null;
    ws.close();
    status("closed (the server did not end the session)");
    $("start").disabled = false;
  }, 10000);
};
$("textform").onsubmit = (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  send({ type: "text", text });
  line(`you (typed): ${text}`, "user");
  $("text").value = "";
};
requestAnimationFrame(drawTimeline);
