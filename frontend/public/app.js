// Chat page. All UI state lives in `state`; handlers change it and call render(), which is
// the only code that writes to the DOM. Network code (readEvents, postForm) knows nothing
// about the page. Model text only ever goes in through textContent, never innerHTML.

// NGINX_HTTPS_PORT's default. The page cannot know a custom port; this is only used to
// tell the user where the microphone works.
const HTTPS_PORT = 8443;

// MediaRecorder formats, in order of preference, with the file extension the ASR service
// uses to recognise them. Chrome records webm, Firefox ogg, Safari mp4.
const AUDIO_FORMATS = [
  ['audio/webm;codecs=opus', 'webm'],
  ['audio/ogg;codecs=opus', 'ogg'],
  ['audio/mp4', 'mp4'],
];

const ui = Object.fromEntries(
  ['messages', 'empty-hint', 'status', 'notice', 'message-input', 'image-input',
    'image-preview-box', 'image-preview', 'remove-image-button', 'record-button',
    'record-timer', 'send-button', 'stop-button', 'composer', 'chat', 'account', 'account-name',
    'sign-out-button', 'sign-in-form', 'username-input', 'password-input', 'sign-in-error', 'sign-in-button']
    .map((id) => [id, document.getElementById(id)]),
);

const state = {
  messages: [],       // {id, role, text, imageUrl, info, error, streaming}
  draft: { text: '', image: null, imageUrl: null },
  chat: null,         // AbortController of the chat request in flight
  recording: null,    // {recorder, startedAt, timer}
  openingMicrophone: false,  // true while the browser asks for the microphone
  elapsed: 0,         // seconds recorded so far
  transcribing: false,
  notice: null,       // {text, error, link?}: feedback about the composer (voice, attachments)
  ready: null,        // {ok, text}: the /readyz line
  // undefined: not asked yet; null: signed out (the sign-in form shows); else {username, auth}
  session: undefined,
  signIn: { busy: false, error: '' },
};

let nextId = 1;

// ---------------------------------------------------------------- transport

// Server-Sent Events over fetch (EventSource cannot POST a form). Yields {event, data}.
// Chunks can split a line anywhere, so an incomplete last line waits in `buffer`.
// Lines end in \n or \r\n (a lone \r, legal in SSE but unused by our server, is not handled).
export async function* readEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();  // stream mode: holds back split UTF-8 sequences
  let buffer = '';
  let event = '';
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;  // an unterminated last event is dropped, as the SSE spec says
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split('\n');
      buffer = lines.pop();
      for (let line of lines) {
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {  // blank line: the event is complete
          if (data.length) yield { event: event || 'message', data: data.join('\n') };
          event = '';
          data = [];
        } else if (!line.startsWith(':')) {  // ":" lines are heartbeats
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event = value;
          else if (field === 'data') data.push(value);
        }
      }
    }
  } finally {
    // Reached on abort, on an error event, or when the consumer stops early: closing
    // the body closes the connection, which is what cancels generation upstream.
    reader.cancel().catch(() => {});
  }
}

class HttpError extends Error {}

// Turns a non-2xx response into a readable message. The API answers {"error", "error_type"};
// anything else (a proxy's HTML page) still gives at least the status.
async function httpError(response) {
  let detail = '';
  try {
    const body = await response.clone().json();
    detail = body.error || '';
  } catch {
    detail = (await response.text().catch(() => '')).trim().slice(0, 200);
  }
  if (detail.startsWith('<')) detail = '';  // a proxy's HTML error page says nothing more
  if (response.status === 401) {
    // The session ended (or never was): the sign-in form shows; the draft stays where it is.
    state.session = null;
    return new HttpError('Tu sesión ha terminado: inicia sesión y vuelve a intentarlo.');
  }
  return new HttpError(`Error ${response.status}${detail ? `: ${detail}` : ''}`);
}

function describe(err) {
  if (err instanceof HttpError) return err.message;
  if (err instanceof TypeError) {  // what fetch throws when the network fails
    return 'No se pudo conectar con el servidor. Comprueba la conexión y vuelve a intentarlo.';
  }
  return err.message || String(err);
}

// ---------------------------------------------------------------- chat

function addMessage(fields) {
  const message = { id: nextId++, text: '', info: '', error: '', streaming: false, ...fields };
  state.messages.push(message);
  return message;
}

async function send() {
  const text = state.draft.text.trim();
  if (!text || state.chat || state.transcribing) return;

  const { image } = state.draft;
  const form = new FormData();
  form.append('message', text);
  if (image) form.append('image', image, image.name || 'imagen');

  addMessage({ role: 'user', text, imageUrl: image ? URL.createObjectURL(image) : null });
  const reply = addMessage({ role: 'assistant', streaming: true });
  // The composer is cleared now, and refilled if the request fails, so nothing typed is lost.
  const sent = { text: state.draft.text, image };
  setDraft('', null);
  state.notice = null;
  const controller = new AbortController();
  state.chat = controller;
  render();

  try {
    const response = await fetch('/api/chat/stream', {
      method: 'POST',
      body: form,
      headers: { Accept: 'text/event-stream' },
      signal: controller.signal,
    });
    if (!response.ok) throw await httpError(response);
    let finished = false;
    for await (const { event, data } of readEvents(response.body)) {
      const payload = parseJson(data);
      if (event === 'meta') {
        reply.info = payload.model ? `Modelo: ${payload.model}` : '';
      } else if (event === 'delta') {
        reply.text += payload.content ?? '';
      } else if (event === 'done') {
        finished = true;
        reply.info = describeDone(reply.info, payload);
      } else if (event === 'error') {
        throw new HttpError(payload.error || 'Error del servidor');
      }
      render();
    }
    // The server always ends with done or error; a stream that just stops was cut.
    if (!finished) throw new Error('La conexión se cortó antes de terminar la respuesta.');
  } catch (err) {
    if (err.name === 'AbortError') {
      reply.info = [reply.info, 'Detenido.'].filter(Boolean).join(' · ');
    } else {
      reply.error = describe(err);
      restoreDraft(sent);
    }
  } finally {
    reply.streaming = false;
    state.chat = null;
    render();
  }
}

function parseJson(data) {
  try {
    return JSON.parse(data) ?? {};
  } catch {
    return {};
  }
}

function describeDone(info, { done_reason: reason, usage } = {}) {
  const parts = [info];
  const tokens = usage && (usage.completion_tokens ?? usage.output_tokens);
  if (Number.isFinite(tokens)) parts.push(`${tokens} tokens`);
  if (reason === 'length') parts.push('respuesta cortada por el límite de tokens');
  return parts.filter(Boolean).join(' · ');
}

// Only refill an empty composer: the user may already have typed something new.
function restoreDraft({ text, image }) {
  if (state.draft.text.trim() || state.draft.image) return;
  setDraft(text, image);
}

function setDraft(text, image) {
  if (image !== state.draft.image) {
    if (state.draft.imageUrl) URL.revokeObjectURL(state.draft.imageUrl);
    state.draft.imageUrl = image ? URL.createObjectURL(image) : null;
  }
  state.draft.text = text;
  state.draft.image = image;
}

// ---------------------------------------------------------------- session

async function checkSession() {
  try {
    const response = await fetch('/api/auth/me', { cache: 'no-store' });
    if (response.status === 401) state.session = null;
    else if (response.ok) state.session = await response.json();
  } catch {
    // Unreachable server: the chat stays visible and its requests say what is wrong.
  }
  render();
}

async function signIn() {
  state.signIn = { busy: true, error: '' };
  render();
  try {
    const response = await fetch('/api/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: ui['username-input'].value, password: ui['password-input'].value }),
    });
    if (response.ok) {
      state.session = await response.json();
      ui['password-input'].value = '';
      state.signIn = { busy: false, error: '' };
    } else {
      const body = await response.json().catch(() => ({}));
      state.signIn = { busy: false, error: response.status === 401
        ? 'Usuario o contraseña incorrectos.' : (body.error || `Error ${response.status}`) };
    }
  } catch (err) {
    state.signIn = { busy: false, error: describe(err) };
  }
  render();
  if (state.session) ui['message-input'].focus();
}

async function signOut() {
  await fetch('/api/auth/logout', { method: 'POST' }).catch(() => {});
  state.session = null;
  render();
}

// ---------------------------------------------------------------- voice

async function toggleRecording() {
  if (state.recording) {
    state.recording.recorder.stop();  // onstop does the rest
    return;
  }
  // A second click while the browser asks for the microphone would otherwise
  // start a second recorder whose stream and timer nobody stops.
  if (state.openingMicrophone) return;
  if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
    // Browsers hide mediaDevices on plain HTTP unless the host is localhost.
    if (window.isSecureContext) {
      showNotice('Este navegador no permite grabar audio.', true);
    } else {
      const secure = `https://${location.hostname}:${HTTPS_PORT}${location.pathname}`;
      state.notice = {
        text: 'El micrófono solo funciona en una conexión segura. Abre esta dirección (la primera vez, acepta el certificado autofirmado): ',
        link: secure,
        error: true,
      };
      render();
    }
    return;
  }

  let stream;
  state.openingMicrophone = true;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showNotice(err.name === 'NotAllowedError'
      ? 'No hay permiso para usar el micrófono. Permítelo en la configuración del navegador.'
      : err.name === 'NotFoundError'
        ? 'No se encontró ningún micrófono.'
        : `No se pudo abrir el micrófono: ${err.message}`, true);
    return;
  } finally {
    state.openingMicrophone = false;
  }

  const format = AUDIO_FORMATS.find(([type]) => MediaRecorder.isTypeSupported(type));
  const recorder = new MediaRecorder(stream, format ? { mimeType: format[0] } : {});
  const chunks = [];
  recorder.addEventListener('dataavailable', (e) => { if (e.data.size) chunks.push(e.data); });
  recorder.addEventListener('stop', () => {
    stream.getTracks().forEach((track) => track.stop());  // turns the mic indicator off
    clearInterval(state.recording.timer);
    state.recording = null;
    // Without parameters ("audio/webm", not "audio/webm;codecs=opus"): plain types are what
    // an upload check compares against.
    const type = (recorder.mimeType || format?.[0] || 'audio/webm').split(';')[0];
    transcribe(new Blob(chunks, { type }), extensionOf(type));
  });

  recorder.start();
  state.elapsed = 0;
  state.recording = {
    recorder,
    startedAt: Date.now(),
    timer: setInterval(() => {
      state.elapsed = Math.floor((Date.now() - state.recording.startedAt) / 1000);
      render();
    }, 250),
  };
  state.notice = null;
  render();
}

function extensionOf(type) {
  const known = AUDIO_FORMATS.find(([candidate]) => candidate.split(';')[0] === type);
  return known ? known[1] : (type.split('/')[1] || 'bin');
}

async function transcribe(clip, extension) {
  if (!clip.size) {
    showNotice('La grabación está vacía.', true);
    return;
  }
  state.transcribing = true;
  showNotice('Transcribiendo…');
  try {
    const form = new FormData();
    form.append('audio', clip, `grabacion.${extension}`);
    const response = await fetch('/api/transcribe', { method: 'POST', body: form });
    if (!response.ok) throw await httpError(response);
    const text = String((await response.json()).transcription ?? '').trim();
    // Added to what is already typed, never sent by itself: the user checks it first.
    const typed = state.draft.text.trimEnd();
    state.draft.text = typed && text ? `${typed} ${text}` : typed || text;
    state.notice = text ? null : { text: 'No se reconoció ninguna palabra.', error: false };
  } catch (err) {
    state.notice = { text: `No se pudo transcribir. ${describe(err)}`, error: true };
  } finally {
    state.transcribing = false;
    render();
    ui['message-input'].focus();
  }
}

// ---------------------------------------------------------------- readiness

async function checkReady() {
  try {
    const response = await fetch('/readyz', { cache: 'no-store' });
    const body = await response.json().catch(() => null);
    state.ready = response.ok
      ? { ok: true, text: 'Servicios listos' }
      : { ok: false, text: `Servicios no listos${summarize(body)} (se reintenta…)` };
  } catch {
    state.ready = { ok: false, text: 'Sin conexión con el servidor (se reintenta…)' };
  }
  render();
  // Models take a while to load at start; keep checking until they are up.
  if (!state.ready.ok) setTimeout(checkReady, 5000);
}

// The /readyz body lists each dependency's state; its exact shape is the gateway's, so this
// only picks out "name: state" pairs it can recognise.
function summarize(body) {
  if (!body || typeof body !== 'object') return '';
  const deps = body.dependencies ?? body.checks ?? body;
  const pairs = Object.entries(deps)
    .filter(([name]) => name !== 'status')
    .map(([name, value]) => [name, typeof value === 'string' ? value : value?.status ?? value?.state])
    .filter(([, value]) => typeof value === 'string')
    .map(([name, value]) => `${name}: ${value}`);
  return pairs.length ? ` — ${pairs.join(', ')}` : '';
}

// ---------------------------------------------------------------- rendering

function showNotice(text, error = false) {
  state.notice = { text, error };
  render();
}

// Message elements are created once and then only updated, so a delta costs one text write.
const nodes = new Map();

// Writes only on change: a rewrite of the same text in a live region can be announced again.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function messageNode(message) {
  const root = document.createElement('article');
  root.className = `message ${message.role}`;
  const who = document.createElement('h2');
  who.className = 'who';
  who.textContent = message.role === 'user' ? 'Tú' : 'Asistente';
  root.append(who);
  if (message.imageUrl) {
    const img = document.createElement('img');
    img.className = 'thumb';
    img.src = message.imageUrl;
    img.alt = 'Imagen enviada';
    root.append(img);
  }
  const text = document.createElement('p');
  text.className = 'text';
  const info = document.createElement('p');
  info.className = 'info';
  root.append(text, info);
  return { root, text, info, error: null };
}

function renderMessages() {
  const list = ui.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  for (const message of state.messages) {
    let node = nodes.get(message.id);
    if (!node) {
      node = messageNode(message);
      nodes.set(message.id, node);
      list.append(node.root);
    }
    setText(node.text, message.text);
    node.text.hidden = !message.text;
    setText(node.info, message.info);
    node.info.hidden = !message.info;
    // The error element exists only while there is an error, so `.error` always means one.
    if (message.error && !node.error) {
      node.error = document.createElement('p');
      node.error.className = 'error';
      node.error.setAttribute('role', 'alert');
      node.root.append(node.error);
    }
    if (node.error) setText(node.error, message.error);
    node.root.classList.toggle('streaming', message.streaming);
    node.root.setAttribute('aria-busy', String(message.streaming));
  }
  ui['empty-hint'].hidden = state.messages.length > 0;
  if (atBottom) list.scrollTop = list.scrollHeight;  // follow the answer unless scrolled up
}

let renderedNotice = null;

function renderSession() {
  const signedOut = state.session === null;
  ui['sign-in-form'].hidden = !signedOut;
  ui.chat.hidden = signedOut;
  ui['sign-in-button'].disabled = state.signIn.busy;
  ui['sign-in-error'].hidden = !state.signIn.error;
  setText(ui['sign-in-error'], state.signIn.error);
  // Nothing to sign out of in single-user mode (auth "off").
  ui.account.hidden = !state.session || state.session.auth !== 'on';
  setText(ui['account-name'], state.session?.username ?? '');
}

function render() {
  renderSession();
  renderMessages();

  const input = ui['message-input'];
  if (input.value !== state.draft.text) input.value = state.draft.text;  // keeps the caret otherwise

  ui['image-preview-box'].hidden = !state.draft.imageUrl;
  if (state.draft.imageUrl) {
    if (ui['image-preview'].getAttribute('src') !== state.draft.imageUrl) {
      ui['image-preview'].src = state.draft.imageUrl;
    }
  } else {
    ui['image-preview'].removeAttribute('src');
  }

  const recording = Boolean(state.recording);
  const record = ui['record-button'];
  setText(record, recording ? 'Parar grabación' : 'Grabar voz');
  record.classList.toggle('recording', recording);
  record.disabled = state.transcribing;
  ui['record-timer'].hidden = !recording;
  const seconds = state.elapsed;
  setText(ui['record-timer'],
    `${String(Math.floor(seconds / 60)).padStart(2, '0')}:${String(seconds % 60).padStart(2, '0')}`);

  const busy = Boolean(state.chat);
  ui['send-button'].disabled = busy || state.transcribing || !state.draft.text.trim();
  ui['stop-button'].disabled = !busy;

  if (renderedNotice !== state.notice) {  // rebuilt only when it changes (it may hold a link)
    renderedNotice = state.notice;
    const notice = ui.notice;
    notice.hidden = !state.notice;
    notice.textContent = state.notice?.text ?? '';
    if (state.notice?.link) {
      const a = document.createElement('a');
      a.href = a.textContent = state.notice.link;
      notice.append(a);
    }
    notice.classList.toggle('error', Boolean(state.notice?.error));
    notice.setAttribute('role', state.notice?.error ? 'alert' : 'status');
  }

  if (state.ready) {
    setText(ui.status, state.ready.text);
    ui.status.classList.toggle('ok', state.ready.ok);
    ui.status.classList.toggle('bad', !state.ready.ok);
  }
}

// ---------------------------------------------------------------- events

ui.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  send();
});

ui['message-input'].addEventListener('input', (e) => {
  state.draft.text = e.target.value;
  render();
});

ui['message-input'].addEventListener('keydown', (e) => {
  // isComposing: Enter that confirms an IME composition must not send.
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});

ui['image-input'].addEventListener('change', (e) => {
  const [file] = e.target.files;
  e.target.value = '';  // so picking the same file again still fires change
  if (!file) return;
  if (!file.type.startsWith('image/')) {
    showNotice('El archivo elegido no es una imagen.', true);
    return;
  }
  setDraft(state.draft.text, file);
  state.notice = null;
  render();
});

ui['remove-image-button'].addEventListener('click', () => {
  setDraft(state.draft.text, null);
  render();
  ui['message-input'].focus();  // the button that had focus is now hidden
});

ui['sign-in-form'].addEventListener('submit', (e) => {
  e.preventDefault();
  signIn();
});
ui['sign-out-button'].addEventListener('click', signOut);
ui['record-button'].addEventListener('click', toggleRecording);
ui['stop-button'].addEventListener('click', () => state.chat?.abort());

render();
checkSession();
checkReady();
