// The chat app's controller: the actions that change `state` (js/state.js), then render()
// (js/render.js) shows it. Modules by concern: js/transport.js (HTTP, SSE), js/conversations.js,
// js/voice.js, js/images.js, js/markdown.js, js/i18n.js.

import { state, newMessage, savePrefs, selectedModel } from './js/state.js';
import { initRender, render, imageRefusal } from './js/render.js';
import { t, setLanguage } from './js/i18n.js';
import { api, HttpError, streamChat, whenUnauthorized } from './js/transport.js';
import * as conversations from './js/conversations.js';
import { prepareImage, ImageError } from './js/images.js';
import { checkMicrophoneAvailable, openMicrophone, Dictation, VoiceError } from './js/voice.js';
import { copyText } from './js/markdown.js';

// NGINX_HTTPS_PORT's default. The page cannot know a custom port; this only tells the user
// where the microphone works.
const HTTPS_PORT = 8443;
// A press of the record button (or space bar) longer than this is push-to-talk: releasing
// it stops. A shorter one is a tap: recording goes on until the next tap.
const HOLD_MS = 400;

const ui = Object.fromEntries([...document.querySelectorAll('[id]')].map((node) => [node.id, node]));

// Coalesces bursts of changes (tokens, level meter) into one render per frame. Hidden tabs
// get no animation frames, so they fall back to a timer.
let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  const run = () => { renderQueued = false; render(); };
  if (document.hidden) setTimeout(run, 100);
  else requestAnimationFrame(run);
}

function notify(text, error = false, link = null) {
  state.notice = text ? { text, error, link } : null;
  render();
}

// An error, in the user's words, with the server's own message when it gave one.
function describe(err) {
  if (err instanceof HttpError) {
    const server = err.message;
    if (err.status === 401) return t('errSession');
    if (err.type === 'cut') return t('errCut');
    if (err.status === 429) {
      return [t('errBusy'), server, err.retryAfter ? t('errRetryAfter', { seconds: err.retryAfter }) : '']
        .filter(Boolean).join(' ');
    }
    if (err.status === 503) return [t('errUnavailable'), server].filter(Boolean).join(' ');
    if (err.status === 413) return server || t('errTooLarge');
    if (err.status === 0) return server || t('errCut');
    return `${t('errStatus', { status: err.status })}${server ? `: ${server}` : ''}`;
  }
  if (err instanceof TypeError) return t('errNetwork');  // what fetch throws when the network fails
  return err.message || String(err);
}

// ------------------------------------------------------------------ session and readiness

whenUnauthorized(() => {
  state.session = null;
  scheduleRender();
});

async function checkSession() {
  try {
    state.session = await api('/api/auth/me');
  } catch (err) {
    // 401: the sign-in form (set by whenUnauthorized). Unreachable server: the chat stays
    // visible and its requests say what is wrong.
    if (!(err instanceof HttpError && err.status === 401)) state.session = { auth: 'unknown' };
  }
  render();
  if (state.session) await loadEverything();
}

async function loadEverything() {
  await Promise.all([loadModels(), loadConversations(), openCurrent(conversations.idFromHash())]);
}

async function signIn() {
  state.signIn = { busy: true, error: '' };
  render();
  try {
    state.session = await api('/api/auth/login', {
      method: 'POST', body: { username: ui['username-input'].value, password: ui['password-input'].value },
    });
    ui['password-input'].value = '';
    state.signIn = { busy: false, error: '' };
  } catch (err) {
    state.session = null;  // a 401 here means wrong credentials, not an expired session
    state.signIn = { busy: false, error: err.status === 401 ? t('wrongCredentials') : describe(err) };
  }
  render();
  if (state.session) {
    ui['message-input'].focus();
    await loadEverything();
  }
}

async function signOut() {
  await api('/api/auth/logout', { method: 'POST' }).catch(() => {});
  Object.assign(state, { session: null, conversations: [], messages: [], currentId: null });
  conversations.showInHash(null);
  render();
}

async function checkReady() {
  let body = null;
  try {
    const response = await fetch('/readyz', { cache: 'no-store' });
    body = await response.json().catch(() => null);
    state.ready = response.ok ? { ok: true, text: t('ready') } : { ok: false, text: t('notReady', { detail: summarize(body) }) };
  } catch {
    state.ready = { ok: false, text: t('offline') };
  }
  render();
  // Models take a while to load at start; keep checking until they are up.
  if (!state.ready.ok) setTimeout(checkReady, 5000);
  else if (state.modelsError && state.session) loadModels();
}

// /readyz's body is {"status", "dependencies": {"asr": STATE, "chat": STATE}}.
function summarize(body) {
  const deps = body?.dependencies;
  if (!deps || typeof deps !== 'object') return '';
  const pairs = Object.entries(deps).filter(([, v]) => typeof v === 'string').map(([k, v]) => `${k}: ${v}`);
  return pairs.length ? ` — ${pairs.join(', ')}` : '';
}

// ------------------------------------------------------------------ models

async function loadModels() {
  try {
    const { data } = await api('/v1/models');
    state.models = data.filter((model) => model.task !== 'transcription');
    state.modelsError = '';
  } catch (err) {
    state.models = null;
    state.modelsError = describe(err);
  }
  render();
}

function chooseModel(id) {
  state.prefs.model = id;
  savePrefs();
  const refusal = state.draft.image && imageRefusal();
  if (refusal) notify(refusal, true);
  else render();
}

// ------------------------------------------------------------------ conversations

async function loadConversations({ more = false } = {}) {
  try {
    const page = await conversations.listConversations(more ? state.nextOffset : 0);
    state.conversations = more ? [...state.conversations, ...page.conversations] : page.conversations;
    state.nextOffset = page.next_offset;
    state.conversationsError = '';
  } catch (err) {
    state.conversationsError = describe(err);
  }
  render();
}

// Shows conversation `id` (null: a new, empty one). Called on load and on back/forward.
async function openCurrent(id) {
  if (state.chat) return;
  state.currentId = id;
  state.messages = [];
  state.editing = false;
  if (!id) {
    render();
    return;
  }
  state.loadingConversation = true;
  render();
  try {
    const conversation = await conversations.loadConversation(id);
    if (state.currentId !== id) return;  // another one was opened meanwhile
    state.messages = conversation.messages.map((m) => newMessage(conversations.fromStored(m)));
    if (conversation.model && state.models?.some((m) => m.id === conversation.model)) {
      state.prefs.model = conversation.model;
    }
  } catch (err) {
    if (state.currentId !== id) return;
    state.currentId = null;
    conversations.showInHash(null);
    notify(err.status === 404 ? t('conversationGone') : describe(err), true);
  } finally {
    if (state.currentId === id || state.currentId === null) state.loadingConversation = false;
    render();
  }
}

function openConversation(id) {
  if (state.chat) return;
  state.sidebarOpen = false;
  conversations.showInHash(id);
  openCurrent(id);
  ui['message-input'].focus();
}

function newChat() {
  if (state.chat) return;
  state.sidebarOpen = false;
  conversations.showInHash(null);
  openCurrent(null);
  ui['message-input'].focus();
}

function startRename(id) {
  state.renaming = id;
  render();
}

function cancelRename() {
  if (!state.renaming) return;
  state.renaming = null;
  render();
}

async function renameConversation(id, title) {
  title = title.trim();
  state.renaming = null;
  const item = state.conversations.find((c) => c.id === id);
  if (!title || !item || title === item.title) {
    render();
    return;
  }
  const before = item.title;
  item.title = title;  // shown at once; put back if the server refuses
  render();
  try {
    Object.assign(item, await conversations.renameConversation(id, title));
  } catch (err) {
    item.title = before;
    state.conversationsError = describe(err);
  }
  render();
  ui['conversation-list'].querySelector(`[data-id="${CSS.escape(id)}"] .conversation-open`)?.focus();
}

async function deleteConversation(id) {
  const item = state.conversations.find((c) => c.id === id);
  if (!item || !confirm(t('confirmDelete', { title: item.title || t('untitled') }))) return;
  try {
    await conversations.deleteConversation(id);
    state.conversations = state.conversations.filter((c) => c.id !== id);
    state.conversationsError = '';
    if (state.currentId === id) newChat();
  } catch (err) {
    state.conversationsError = describe(err);
  }
  render();
}

// ------------------------------------------------------------------ chat

function setDraft(text, image) {
  if (image !== state.draft.image) {
    if (state.draft.imageUrl) URL.revokeObjectURL(state.draft.imageUrl);
    state.draft.imageUrl = image ? URL.createObjectURL(image) : null;
  }
  state.draft.text = text;
  state.draft.image = image;
}

async function send() {
  const text = state.draft.text.trim();
  if (!text || state.chat || state.voice.phase !== 'idle' || state.loadingConversation) return;
  const turn = { text, image: state.draft.image };
  const edited = state.editing;
  setDraft('', null);
  state.editing = false;
  state.notice = null;
  try {
    // An edited message replaces itself and what followed it, on the page and in the history.
    if (edited) await cutFrom(edited);
  } catch (err) {
    setDraft(turn.text, turn.image);
    notify(describe(err), true);
    return;
  }
  runTurn(turn);
}

// Deletes a message and every later one, stored and shown: regenerate and edit-and-resend
// send a turn again in its place, so the model's history holds only the new version.
async function cutFrom(message) {
  if (message.id != null && state.currentId) await conversations.truncateConversation(state.currentId, message.id);
  const index = state.messages.indexOf(message);
  if (index >= 0) state.messages.splice(index);
}

// One exchange: the user's message and the streamed answer. On failure the answer shows the
// error with a Retry button, and the composer gets the turn back if it is empty, so
// nothing typed or attached is lost.
async function runTurn(turn) {
  const user = newMessage({ role: 'user', text: turn.text, images: turn.image ? [URL.createObjectURL(turn.image)] : [] });
  user.sent = turn;  // what regenerate and edit resend (the image as a Blob, not a URL)
  const reply = newMessage({ role: 'assistant', streaming: true, status: 'streaming' });
  state.messages.push(user, reply);
  const controller = new AbortController();
  state.chat = { controller, phase: 'waiting' };
  render();
  try {
    if (!state.currentId) await startConversation();
    const events = streamChat({ ...turn, conversationId: state.currentId, model: selectedModel()?.id,
      signal: controller.signal });
    for await (const event of events) {
      state.chat.phase = 'streaming';
      if (event.type === 'meta') {
        reply.model = event.model ?? '';
        reply.id = event.message_id ?? null;
        user.id = event.user_message_id ?? null;
      } else if (event.type === 'delta') {
        reply.text += event.content ?? '';
      } else if (event.type === 'done') {
        reply.status = 'complete';
        reply.tokens = event.usage?.completion_tokens ?? null;
        reply.doneReason = event.done_reason;
      }
      scheduleRender();
    }
  } catch (err) {
    if (err.name === 'AbortError') {
      reply.status = 'stopped';  // the gateway keeps what was generated, as incomplete
    } else {
      reply.status = 'failed';
      reply.error = describe(err);
      reply.retry = turn;
      if (!state.draft.text.trim() && !state.draft.image) setDraft(turn.text, turn.image);
    }
  } finally {
    reply.streaming = false;
    state.chat = null;
    render();
  }
  loadConversations();  // the title and the order (newest activity first) changed
}

async function startConversation() {
  const conversation = await conversations.createConversation(selectedModel()?.id);
  state.currentId = conversation.id;
  conversations.showInHash(conversation.id);
  state.conversations = [conversation, ...state.conversations.filter((c) => c.id !== conversation.id)];
}

function retry(reply) {
  const index = state.messages.indexOf(reply);
  if (state.chat || index < 0) return;
  // The failed pair goes; the same turn runs again. The composer drops its copy of it.
  const user = state.messages[index - 1];
  state.messages.splice(user?.role === 'user' ? index - 1 : index, user?.role === 'user' ? 2 : 1);
  const turn = reply.retry;
  if (state.draft.text.trim() === turn.text && state.draft.image === turn.image) setDraft('', null);
  state.notice = null;
  runTurn(turn);
}

// Regenerate: the last exchange is cut off (here and in the stored conversation) and its
// question asked again, so the model does not see the answer it replaces.
async function regenerate() {
  const user = state.messages.findLast((m) => m.role === 'user');
  if (!user || state.chat) return;
  try {
    const turn = user.sent ?? { text: user.text, image: await storedImage(user) };
    await cutFrom(user);
    runTurn(turn);
  } catch (err) {
    notify(describe(err), true);
  }
}

async function storedImage(message) {
  if (!message.images.length) return null;
  const response = await fetch(message.images[0]);
  if (!response.ok) throw new HttpError(response.status, '');
  const blob = await response.blob();
  return new File([blob], 'imagen', { type: blob.type });
}

async function editLast(message) {
  if (state.chat) return;
  let image = message.sent?.image ?? null;
  if (!image && message.images.length) image = await storedImage(message).catch(() => null);
  setDraft(message.text, image);
  state.editing = message;  // send() replaces this message and what followed it
  notify(t('editing'));
  ui['message-input'].focus();
}

function stop() {
  state.chat?.controller.abort();
}

// ------------------------------------------------------------------ images

async function attachImage(file) {
  if (!file) return;
  const refusal = imageRefusal();
  if (refusal) {
    notify(refusal, true);
    return;
  }
  if (state.draft.image) {
    notify(t('oneImageOnly', { count: selectedModel()?.max_images_per_message || 1 }), true);
    return;
  }
  try {
    setDraft(state.draft.text, await prepareImage(file));
    state.notice = null;
  } catch (err) {
    state.notice = { text: err instanceof ImageError ? err.message : describe(err), error: true };
  }
  render();
}

// ------------------------------------------------------------------ voice

let dictation = null;
let timer = null;
let pressedAt = 0;
let pressStartedRecording = false;

function pressStart() {
  pressedAt = Date.now();
  pressStartedRecording = false;
  if (state.voice.phase === 'recording' || state.voice.phase === 'opening') {
    finishRecording();  // the second tap of tap-to-toggle
  } else if (state.voice.phase === 'idle') {
    pressStartedRecording = true;
    startRecording();
  }
}

function pressEnd() {
  if (!pressStartedRecording) return;
  pressStartedRecording = false;
  // Held: push-to-talk, so releasing stops. Tapped: keep recording until the next tap.
  if (Date.now() - pressedAt >= HOLD_MS) finishRecording();
}

async function startRecording() {
  try {
    checkMicrophoneAvailable(HTTPS_PORT);
  } catch (err) {
    notify(err.message, true, err.link);
    return;
  }
  state.voice = { ...state.voice, phase: 'opening', elapsed: 0, level: 0, live: '', stopWanted: false };
  state.notice = null;
  render();
  let stream;
  try {
    stream = await openMicrophone();
  } catch (err) {
    state.voice.phase = 'idle';
    notify(err instanceof VoiceError ? err.message : describe(err), true);
    return;
  }
  if (state.voice.stopWanted) {  // released before the microphone opened
    stream.getTracks().forEach((track) => track.stop());
    state.voice.phase = 'idle';
    render();
    return;
  }
  dictation = new Dictation(stream, {
    language: state.prefs.asrLanguage,
    onLevel: (level) => { state.voice.level = level; scheduleRender(); },
    onLive: (text) => { state.voice.live = text; scheduleRender(); },
  });
  dictation.start();
  state.voice.phase = 'recording';
  state.voice.startedAt = Date.now();
  timer = setInterval(() => {
    state.voice.elapsed = Math.floor((Date.now() - state.voice.startedAt) / 1000);
    render();
  }, 250);
  render();
}

async function finishRecording() {
  if (state.voice.phase === 'opening') {
    state.voice.stopWanted = true;
    return;
  }
  if (state.voice.phase !== 'recording') return;
  clearInterval(timer);
  state.voice.phase = 'transcribing';
  notify(t('transcribing'));
  let text = '';
  try {
    text = await dictation.finish();
    // Added to what is already typed, editable: the user checks it before it is sent
    // (unless they chose auto-send).
    const typed = state.draft.text.trimEnd();
    state.draft.text = typed && text ? `${typed} ${text}` : typed || text;
    state.notice = text ? null : { text: t('nothingHeard'), error: false };
  } catch (err) {
    state.notice = { text: t('transcribeFailed', { error: err instanceof VoiceError ? err.message : describe(err) }), error: true };
  } finally {
    dictation = null;
    state.voice = { ...state.voice, phase: 'idle', level: 0, live: '' };
    render();
    ui['message-input'].focus();
  }
  if (text && state.prefs.autoSend) send();
}

// Space is push-to-talk unless it has a job where the focus is (typing, pressing a button).
function spaceIsForTalking(target) {
  if (target === ui['record-button']) return true;
  return !target.closest('input, textarea, select, button, a, summary, [contenteditable]');
}

// ------------------------------------------------------------------ events

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
  } else if (e.key === 'Escape' && state.chat) {
    stop();
  }
});

ui['message-input'].addEventListener('paste', (e) => {
  const file = [...(e.clipboardData?.files ?? [])].find((f) => f.type.startsWith('image/'));
  if (file) {
    e.preventDefault();
    attachImage(file);
  }
});

ui['image-button'].addEventListener('click', () => ui['image-input'].click());
ui['image-input'].addEventListener('change', (e) => {
  const [file] = e.target.files;
  e.target.value = '';  // so picking the same file again still fires change
  attachImage(file);
});

ui['remove-image-button'].addEventListener('click', () => {
  setDraft(state.draft.text, null);
  state.notice = null;
  render();
  ui['message-input'].focus();  // the button that had focus is now hidden
});

// Drag and drop anywhere on the page; the browser must never navigate to a dropped file.
const carriesFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes('Files');
window.addEventListener('dragover', (e) => {
  if (!carriesFiles(e)) return;
  e.preventDefault();
  if (!state.dragging) { state.dragging = true; render(); }
});
window.addEventListener('dragleave', (e) => {
  if (e.relatedTarget === null && state.dragging) { state.dragging = false; render(); }
});
window.addEventListener('drop', (e) => {
  if (!carriesFiles(e)) return;
  e.preventDefault();
  state.dragging = false;
  render();
  attachImage([...e.dataTransfer.files].find((f) => f.type.startsWith('image/')) ?? e.dataTransfer.files[0]);
});

ui['stop-button'].addEventListener('click', stop);

// Record button: pointer presses distinguish hold from tap; keyboard activation (a click
// with detail 0, from Enter or Space on the focused button) toggles.
const record = ui['record-button'];
record.addEventListener('pointerdown', (e) => {
  if (e.button !== 0) return;
  record.setPointerCapture?.(e.pointerId);  // a finger sliding off still releases here
  pressStart();
});
record.addEventListener('pointerup', pressEnd);
record.addEventListener('pointercancel', pressEnd);
record.addEventListener('click', (e) => {
  if (e.detail !== 0) return;  // pointer clicks were handled by pointerdown/up
  if (state.voice.phase === 'idle') startRecording();
  else finishRecording();
});

window.addEventListener('keydown', (e) => {
  if (e.code !== 'Space' || e.repeat || !spaceIsForTalking(e.target) || state.session === null) return;
  e.preventDefault();  // no page scroll, no click on the focused record button
  pressStart();
});
window.addEventListener('keyup', (e) => {
  if (e.code !== 'Space' || !spaceIsForTalking(e.target)) return;
  e.preventDefault();
  pressEnd();
});

ui['asr-language'].addEventListener('change', (e) => {
  state.prefs.asrLanguage = e.target.value;
  savePrefs();
});
ui['auto-send'].addEventListener('change', (e) => {
  state.prefs.autoSend = e.target.checked;
  savePrefs();
});

ui['model-select'].addEventListener('change', (e) => chooseModel(e.target.value));

ui['sign-in-form'].addEventListener('submit', (e) => {
  e.preventDefault();
  signIn();
});
ui['sign-out-button'].addEventListener('click', signOut);

ui['new-chat-button'].addEventListener('click', newChat);
ui['load-more-button'].addEventListener('click', () => loadConversations({ more: true }));
ui['sidebar-toggle'].addEventListener('click', () => {
  state.sidebarOpen = !state.sidebarOpen;
  render();
  if (state.sidebarOpen) ui['new-chat-button'].focus();
});
ui['sidebar-backdrop'].addEventListener('click', () => {
  state.sidebarOpen = false;
  render();
});
window.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && state.sidebarOpen) {
    state.sidebarOpen = false;
    render();
    ui['sidebar-toggle'].focus();
  }
});

ui['theme-button'].addEventListener('click', () => {
  state.prefs.theme = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
  savePrefs();
  render();
});
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', render);

ui['ui-language'].addEventListener('change', (e) => {
  setLanguage(e.target.value);
  if (state.ready) state.ready.text = state.ready.ok ? t('ready') : state.ready.text;
  render();
});

// Back/forward (and a hand-edited hash) switch conversations.
window.addEventListener('popstate', () => openCurrent(conversations.idFromHash()));

initRender(ui, {
  openConversation, startRename, cancelRename, renameConversation, deleteConversation,
  retry, regenerate, editLast, copy: copyText,
});
render();
checkReady();
checkSession();
