"""An OpenAI-Realtime-compatible endpoint (``/v1/realtime``) over the same engine, so existing clients (the official
``openai`` package's ``client.realtime.connect``, evaluation tools) can talk to a microturn model.

What maps to what (docs/protocol.md has the table):
- ``input_audio_buffer.append`` (base64 PCM16 24 kHz) is resampled to 16 kHz and streamed into the session;
  ``commit`` / ``clear`` are acknowledged but change nothing: the audio is already being listened to.
- ``conversation.item.create`` with ``input_text`` (and ``session.instructions``) become typed text.
- ``turn_detection`` is always null: the model decides when to speak, so ``response.create`` is acknowledged and
  does not force a response; a response opens when the model starts speaking and is done after its first silent
  micro-turn. ``response.cancel`` closes the current response as cancelled and mutes the rest of that utterance.
- Event names: the GA names (``response.output_audio.delta`` ...) by default; the beta names
  (``response.audio.delta`` ...) for clients that send the ``OpenAI-Beta: realtime=v1`` header.
"""
from __future__ import annotations

import base64
import itertools
import json

import numpy as np
from starlette.websockets import WebSocket

from ..codecs.audio import float_to_pcm16, pcm16_to_float
from ..runtime.session import TurnOutput
from . import protocol as P
from .hub import CLOSE_POLICY, Connection, Hub, Resampler, SpokenText, voiced

RATE = 24000
TURN_NOTE = "turn_detection is ignored (always null): the microturn model decides itself when to speak"
GA_NAMES = {"audio.delta": "response.output_audio.delta", "audio.done": "response.output_audio.done",
            "transcript.delta": "response.output_audio_transcript.delta",
            "transcript.done": "response.output_audio_transcript.done", "item.created": "conversation.item.added",
            "part": "output_audio"}
BETA_NAMES = {"audio.delta": "response.audio.delta", "audio.done": "response.audio.done",
              "transcript.delta": "response.audio_transcript.delta",
              "transcript.done": "response.audio_transcript.done", "item.created": "conversation.item.created",
              "part": "audio"}
NO_OPS = {"conversation.item.truncate", "conversation.item.delete", "conversation.item.retrieve",
          "output_audio_buffer.clear", "transcription_session.update"}


def _get(obj, *keys):
    """obj[k1][k2]... when every level is a dict, else None."""
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


class RealtimeConnection(Connection):
    """One client of ``/v1/realtime``."""

    def __init__(self, ws: WebSocket, hub: Hub):
        super().__init__(ws, hub)
        self.beta = "realtime=v1" in ws.headers.get("openai-beta", "").lower()
        self.names = BETA_NAMES if self.beta else GA_NAMES
        self.model = (ws.query_params.get("model") or "microturn")[:64]
        self.counter = itertools.count(1)
        self.to16, self.to24 = Resampler(RATE, 16000, lead=True), Resampler(16000, RATE)
        self.spoken = SpokenText(hub.tok)
        self.instructions = ""
        self.response: dict | None = None  # the response being spoken: ids and transcript so far
        self.muted = False  # response.cancel: drop the rest of the current utterance
        self.client_event: str | None = None  # the event_id of the client event being handled (errors name it)
        self.session_id = self.next_id("sess")

    # ---- formats ----
    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.counter):06d}"

    def event(self, kind: str, **fields) -> None:
        self.send(json.dumps({"type": kind, "event_id": self.next_id("event"), **fields}, separators=(",", ":")))

    def error_message(self, code: str, message: str, fatal: bool) -> str:
        kind = "server_error" if code == "internal_error" else "invalid_request_error"
        return json.dumps({"type": "error", "event_id": self.next_id("event"),
                           "error": {"type": kind, "code": code, "message": message, "param": None,
                                     "event_id": self.client_event}})

    def session_object(self) -> dict:
        pcm = {"type": "audio/pcm", "rate": RATE}
        if self.beta:
            return {"id": self.session_id, "object": "realtime.session", "model": self.model,
                    "modalities": ["audio", "text"], "instructions": self.instructions,
                    "input_audio_format": "pcm16", "output_audio_format": "pcm16", "turn_detection": None}
        return {"type": "realtime", "id": self.session_id, "object": "realtime.session", "model": self.model,
                "output_modalities": ["audio"], "instructions": self.instructions,
                "audio": {"input": {"format": pcm, "turn_detection": None},
                          "output": {"format": pcm, "voice": "microturn"}}}

    # ---- life ----
    async def on_open(self) -> None:
        if not self.authenticated:
            await self.close(CLOSE_POLICY, "unauthorized",
                             ("unauthorized", "a valid token is required (Authorization: Bearer or ?token=)"))
            return
        if await self.attach():
            self.event("session.created", session=self.session_object())

    async def handle(self, data: bytes | str) -> None:
        try:
            if isinstance(data, bytes):
                raise P.ProtocolError("bad_message", "binary frames are not part of the Realtime protocol: send "
                                                     "input_audio_buffer.append with base64 audio")
            if len(data) > P.MAX_MESSAGE:
                raise P.ProtocolError("too_large", f"message of {len(data)} bytes is over the limit of "
                                                   f"{P.MAX_MESSAGE} bytes")
            obj = P.load_json(data)
            self.client_event = obj["event_id"] if isinstance(obj.get("event_id"), str) else None
            self.dispatch(obj)
        except P.ProtocolError as e:  # text_backlog is not a bad event, only one too soon: not counted
            (self.error if e.code == "text_backlog" else self.bad)(e.code, e.message)
        finally:
            self.client_event = None

    def dispatch(self, obj: dict) -> None:
        kind = obj["type"]
        if kind == "session.update":
            self.update(obj.get("session"))
        elif kind == "input_audio_buffer.append":
            self.append(obj.get("audio"))
        elif kind == "input_audio_buffer.commit":
            self.event("input_audio_buffer.committed", previous_item_id=None, item_id=self.next_id("item"))
        elif kind == "input_audio_buffer.clear":
            self.event("input_audio_buffer.cleared")
        elif kind == "conversation.item.create":
            self.item(obj.get("item"))
        elif kind == "response.create":
            pass  # the model decides when to speak; its next utterance is the response
        elif kind == "response.cancel":
            self.cancel()
        elif kind not in NO_OPS:
            raise P.ProtocolError("unknown_event", f"unknown or unsupported client event {kind[:64]!r}")

    # ---- client events ----
    def update(self, session) -> None:
        if not isinstance(session, dict):
            raise P.ProtocolError("bad_message", "session.update needs a 'session' object")
        self._check_formats(session)
        instructions = session.get("instructions")
        if isinstance(instructions, str) and instructions.strip() and instructions != self.instructions:
            self.hub.push_text(self.client, P.text_field(instructions))
            self.instructions = instructions
        asked = session.get("turn_detection", _get(session, "audio", "input", "turn_detection"))
        extra = {"note": TURN_NOTE} if asked is not None else {}
        self.event("session.updated", session=self.session_object(), **extra)

    @staticmethod
    def _check_formats(session: dict) -> None:
        """Only PCM16 at 24 kHz is spoken here (the beta 'pcm16' or the GA {'type': 'audio/pcm', 'rate': 24000})."""
        for key in ("input_audio_format", "output_audio_format"):
            v = session.get(key)
            if v is not None and v != "pcm16":
                raise P.ProtocolError("unsupported_format", f"{key} {P.show(v)} is not supported; use 'pcm16'")
        audio = session.get("audio")
        if not isinstance(audio, dict):
            return
        for side in ("input", "output"):
            fmt = _get(audio, side, "format")
            if isinstance(fmt, dict) and (fmt.get("type", "audio/pcm") != "audio/pcm"
                                          or fmt.get("rate", RATE) != RATE):
                raise P.ProtocolError("unsupported_format", f"audio.{side}.format must be audio/pcm at {RATE} Hz")

    def append(self, audio) -> None:
        pcm = P.b64_field(audio, "audio")
        if len(pcm) % 2:
            raise P.ProtocolError("bad_audio", f"audio must be PCM16 (2 bytes per sample), got {len(pcm)} bytes")
        x = self.to16(pcm16_to_float(pcm))
        if len(x) and not self.hub.push_audio(self.client, x):
            self.too_fast()

    def item(self, item) -> None:
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            raise P.ProtocolError("unsupported_item", "only message items with input_text content are supported")
        content = item.get("content")
        texts = [c.get("text") for c in content if isinstance(c, dict) and c.get("type") in ("input_text", "text")] \
            if isinstance(content, list) else []
        if not texts:
            raise P.ProtocolError("unsupported_item", "the item has no input_text content (input_audio items are "
                                                      "not supported: stream audio with input_audio_buffer.append)")
        text = P.text_field(" ".join(t for t in texts if isinstance(t, str)))
        self.hub.push_text(self.client, text)
        item_id = item.get("id") if isinstance(item.get("id"), str) else self.next_id("item")
        self.event(self.names["item.created"], previous_item_id=None,
                   item={"id": item_id[:64], "object": "realtime.item", "type": "message",
                         "role": item.get("role") if item.get("role") in ("user", "system") else "user",
                         "status": "completed", "content": [{"type": "input_text", "text": text}]})

    def cancel(self) -> None:
        if self.response is None:  # said, as OpenAI's server says it, but not counted as a bad message
            self.error("response_cancel_not_active", "there is no response in progress to cancel")
            return
        self.close_response("cancelled")
        self.muted = True

    # ---- output ----
    def deliver(self, outs: list[TurnOutput]) -> None:
        for o in outs:
            text = self.spoken.push(o.said)
            audio = self.to24(o.audio) if o.audio is not None else np.zeros(0, np.float32)
            speaking = voiced(o.audio) or bool(text)
            if not speaking:
                self.muted = False
                if self.response is not None:
                    tail = audio[: 1 + np.flatnonzero(np.abs(audio) > 1e-4).max(initial=-1)]
                    if len(tail):  # the end of the last word, which the resampler's filter held back
                        self.event(self.names["audio.delta"], **self.ref(),
                                   delta=base64.b64encode(float_to_pcm16(tail)).decode())
                    self.close_response("completed")
                continue
            if self.muted:
                continue
            if self.response is None:
                self.open_response()
            r = self.response
            if text:
                r["transcript"] += text
                self.event(self.names["transcript.delta"], **self.ref(), delta=text)
            if len(audio):
                self.event(self.names["audio.delta"], **self.ref(),
                           delta=base64.b64encode(float_to_pcm16(audio)).decode())

    def ref(self) -> dict:
        r = self.response
        return {"response_id": r["id"], "item_id": r["item_id"], "output_index": 0, "content_index": 0}

    def response_object(self, status: str, output: list) -> dict:
        r = self.response
        modalities = {"modalities": ["audio", "text"]} if self.beta else {"output_modalities": ["audio"]}
        return {"id": r["id"], "object": "realtime.response", "status": status, "output": output,
                "conversation_id": None, **modalities, "status_details": None, "usage": None}

    def item_object(self, status: str) -> dict:
        r = self.response
        content = [{"type": self.names["part"], "transcript": r["transcript"]}] if status != "in_progress" else []
        return {"id": r["item_id"], "object": "realtime.item", "type": "message", "role": "assistant",
                "status": status, "content": content}

    def open_response(self) -> None:
        self.response = {"id": self.next_id("resp"), "item_id": self.next_id("item"), "transcript": ""}
        self.event("response.created", response=self.response_object("in_progress", []))
        self.event("response.output_item.added", response_id=self.response["id"], output_index=0,
                   item=self.item_object("in_progress"))
        self.event("response.content_part.added", **self.ref(), part={"type": "audio", "transcript": ""})

    def close_response(self, status: str) -> None:
        r = self.response
        item_status = "completed" if status == "completed" else "incomplete"
        self.event(self.names["audio.done"], **self.ref())
        self.event(self.names["transcript.done"], **self.ref(), transcript=r["transcript"])
        self.event("response.content_part.done", **self.ref(), part={"type": "audio", "transcript": r["transcript"]})
        item = self.item_object(item_status)
        self.event("response.output_item.done", response_id=r["id"], output_index=0, item=item)
        self.event("response.done", response=self.response_object(status, [item]))
        self.response = None
