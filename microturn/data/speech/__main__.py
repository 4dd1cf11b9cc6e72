"""``python -m microturn.data.speech``: each engine voice's speed, in seconds of audio per second of wall time."""
from microturn.data.speech.render import real_time_factors

for vid, rtf in real_time_factors().items():
    print(f"{vid:32s} {rtf:8.0f}x real time")
