// Dictation: microphone → MediaRecorder → text.
//
// While recording, the chunks go live over the WebSocket /api/transcribe/stream, so the
// transcript appears while the user speaks. The chunks are also kept: if the socket cannot
// open or fails midway, the whole clip is posted to /api/transcribe instead, and the user
// still gets text. A level meter (AnalyserNode) shows that the microphone hears something.

import { t } from './i18n.js';
import { transcribeClip } from './transport.js';

export const ASR_LANGUAGES = ['es', 'auto', 'en', 'fr', 'de', 'it', 'pt'];

// MediaRecorder formats, in order of preference, with the file extension the ASR service
// recognises. Chrome records webm, Firefox ogg, Safari mp4.
const AUDIO_FORMATS = [
  ['audio/webm;codecs=opus', 'webm'],
  ['audio/ogg;codecs=opus', 'ogg'],
  ['audio/mp4', 'mp4'],
];
const CHUNK_MS = 250;        // how often MediaRecorder hands over audio (and we send it)
const LIVE_END_TIMEOUT_MS = 60000;  // finals after `end` can take a while on a slow CPU

export class VoiceError extends Error {
  constructor(message, link = null) {
    super(message);
    this.link = link;  // where the microphone does work (the HTTPS port), when that is the fix
  }
}

// Browsers hide mediaDevices on plain HTTP unless the host is localhost: say where it works.
export function checkMicrophoneAvailable(httpsPort) {
  if (navigator.mediaDevices?.getUserMedia && window.MediaRecorder) return;
  if (window.isSecureContext) throw new VoiceError(t('micUnsupported'));
  throw new VoiceError(t('micInsecure'), `https://${location.hostname}:${httpsPort}${location.pathname}`);
}

export async function openMicrophone() {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    if (err.name === 'NotAllowedError') throw new VoiceError(t('micDenied'));
    if (err.name === 'NotFoundError') throw new VoiceError(t('micMissing'));
    throw new VoiceError(t('micFailed', { error: err.message }));
  }
}

export class Dictation {
  // onLevel(0..1) many times a second; onLive(text) when the live transcript changes.
  constructor(stream, { language, onLevel, onLive }) {
    this.stream = stream;
    this.language = language;
    this.onLevel = onLevel;
    this.onLive = onLive;
    this.chunks = [];
    this.finals = [];
    this.interim = '';
    const format = AUDIO_FORMATS.find(([type]) => MediaRecorder.isTypeSupported(type));
    this.recorder = new MediaRecorder(stream, format ? { mimeType: format[0] } : {});
    this.mimeType = this.recorder.mimeType || format?.[0] || 'audio/webm';
  }

  start() {
    this.stopped = new Promise((resolve) => this.recorder.addEventListener('stop', resolve, { once: true }));
    this.recorder.addEventListener('dataavailable', (e) => {
      if (!e.data.size) return;
      this.chunks.push(e.data);
      if (this.socket?.readyState === WebSocket.OPEN && this.configured) this.socket.send(e.data);
    });
    this.openSocket();
    this.recorder.start(CHUNK_MS);
    this.startMeter();
  }

  openSocket() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/api/transcribe/stream`);
    } catch {
      return;  // no live transcript; the upload path covers it
    }
    this.socket = socket;
    this.liveFailed = false;
    this.closed = new Promise((resolve) => socket.addEventListener('close', resolve, { once: true }));
    socket.addEventListener('open', () => {
      const language = this.language === 'auto' ? 'auto' : this.language;
      socket.send(JSON.stringify({ mime_type: this.mimeType, language }));
      this.configured = true;
      for (const chunk of this.chunks) socket.send(chunk);  // what was recorded before it opened
    });
    socket.addEventListener('message', (e) => {
      let event;
      try { event = JSON.parse(e.data); } catch { return; }
      if (event.type === 'interim') this.interim = event.text ?? '';
      else if (event.type === 'final') {
        this.interim = '';
        if (event.text?.trim()) this.finals.push(event.text.trim());
      } else if (event.type === 'error') this.liveFailed = true;
      this.onLive([...this.finals, this.interim.trim()].filter(Boolean).join(' '));
    });
    socket.addEventListener('error', () => { this.liveFailed = true; });
    socket.addEventListener('close', (e) => { if (e.code !== 1000) this.liveFailed = true; });
  }

  startMeter() {
    try {
      this.audio = new AudioContext();
      this.audio.resume().catch(() => {});
      const analyser = this.audio.createAnalyser();
      analyser.fftSize = 1024;
      this.audio.createMediaStreamSource(this.stream).connect(analyser);
      const samples = new Float32Array(analyser.fftSize);
      const tick = () => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const s of samples) sum += s * s;
        // RMS of speech is ~0.01–0.3; the square root spreads that over the bar.
        this.onLevel(Math.min(1, Math.sqrt(Math.sqrt(sum / samples.length)) * 1.6));
        this.frame = requestAnimationFrame(tick);
      };
      tick();
    } catch {
      // No Web Audio: no meter, the recording itself still works.
    }
  }

  release() {
    cancelAnimationFrame(this.frame);
    this.audio?.close().catch(() => {});
    this.stream.getTracks().forEach((track) => track.stop());  // turns the mic indicator off
  }

  // Stops recording and returns the transcript (live finals, else the uploaded clip's text).
  async finish() {
    if (this.recorder.state !== 'inactive') this.recorder.stop();
    await this.stopped;  // the last dataavailable comes before stop
    this.release();
    const clip = new Blob(this.chunks, { type: this.mimeType.split(';')[0] });
    if (!clip.size) throw new VoiceError(t('emptyRecording'));
    if (await this.finishLive()) return this.finals.join(' ');
    const extension = AUDIO_FORMATS.find(([type]) => type.split(';')[0] === clip.type)?.[1]
      ?? (clip.type.split('/')[1] || 'bin');
    const language = this.language === 'auto' ? 'auto' : this.language;
    const result = await transcribeClip(clip, `grabacion.${extension}`, language);
    return String(result.transcription ?? '').trim();
  }

  // True when the live socket delivered every final and closed normally.
  async finishLive() {
    const socket = this.socket;
    if (!socket || this.liveFailed || socket.readyState !== WebSocket.OPEN || !this.configured) {
      socket?.close();
      return false;
    }
    socket.send(JSON.stringify({ type: 'end' }));
    const timeout = new Promise((resolve) => setTimeout(resolve, LIVE_END_TIMEOUT_MS, 'timeout'));
    const outcome = await Promise.race([this.closed, timeout]);
    if (outcome === 'timeout') socket.close();
    return outcome !== 'timeout' && !this.liveFailed;
  }

  cancel() {
    if (this.recorder.state !== 'inactive') this.recorder.stop();
    this.socket?.close();
    this.release();
  }
}
