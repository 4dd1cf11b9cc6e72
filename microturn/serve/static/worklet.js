// microturn microphone capture: an AudioWorklet that downsamples the microphone to 16 kHz PCM16 and posts
// 20 ms chunks (320 samples) with their RMS level to the page. `sampleRate` is the AudioContext's rate (44.1 or
// 48 kHz usually); each output sample is the mean of the input samples of its interval (a box low-pass filter,
// enough against aliasing for speech at these ratios).
const OUT_RATE = 16000;
const CHUNK = 320;

class MicCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / OUT_RATE; // input samples per output sample (>= 1)
    this.pos = 0;
    this.sum = 0;
    this.count = 0;
    this.sumsq = 0;
    this.chunk = new Int16Array(CHUNK);
    this.k = 0;
  }

  emit(v) {
    this.sumsq += v * v;
    this.chunk[this.k++] = Math.max(-32768, Math.min(32767, Math.round(v * 32767)));
    if (this.k === CHUNK) {
      const rms = Math.sqrt(this.sumsq / CHUNK);
      this.port.postMessage({ pcm: this.chunk.buffer, rms }, [this.chunk.buffer]);
      this.chunk = new Int16Array(CHUNK);
      this.k = 0;
      this.sumsq = 0;
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      this.sum += channel[i];
      this.count += 1;
      this.pos += 1;
      if (this.pos >= this.ratio) {
        this.pos -= this.ratio;
        this.emit(this.sum / this.count);
        this.sum = 0;
        this.count = 0;
      }
    }
    return true;
  }
}

registerProcessor("mic-capture", MicCapture);
