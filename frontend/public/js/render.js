// state → DOM. The only module that writes to the page. Each part writes only what changed
// (a rewrite of the same text in a live region can be announced again, and re-parsing
// markdown on every frame would waste the CPU the model needs).
//
// Model text enters through renderMarkdown (sanitised) or textContent, nothing else;
// titles and user text always through textContent.

import { state, selectedModel } from './state.js';
import { t, language, translatePage } from './i18n.js';
import { renderMarkdown } from './markdown.js';

let ui;
let on;  // the actions that buttons built here call (regenerate, edit, retry, copy, conversations)

export function initRender(elements, handlers) {
  ui = elements;
  on = handlers;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

function button(label, className, handler, extra = {}) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = className;
  b.textContent = label;
  for (const [name, value] of Object.entries(extra)) b.setAttribute(name, value);
  b.addEventListener('click', handler);
  return b;
}

let renderedLanguage = null;

export function render() {
  if (renderedLanguage !== language()) {
    renderedLanguage = language();
    translatePage();
    ui['ui-language'].value = language();
    resetLanguageDependent();
  }
  renderTheme();
  renderSession();
  renderStatus();
  renderModels();
  renderSidebar();
  renderMessages();
  renderComposer();
  renderVoice();
  renderNotice();
}

// Parts built once and keyed by a signature are rebuilt when the language changes.
function resetLanguageDependent() {
  sidebarSignature = null;
  modelsSignature = null;
  renderedNotice = undefined;
  for (const node of nodes.values()) node.signature = null;
}

function renderTheme() {
  const theme = state.prefs.theme || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
  if (document.documentElement.dataset.theme !== theme) document.documentElement.dataset.theme = theme;
  // The button says what it switches to.
  setText(ui['theme-button'], theme === 'dark' ? t('themeLight') : t('themeDark'));
}

function renderSession() {
  const signedOut = state.session === null;
  setHidden(ui['sign-in-form'], !signedOut);
  setHidden(ui.chat, signedOut);
  ui['sign-in-button'].disabled = state.signIn.busy;
  setHidden(ui['sign-in-error'], !state.signIn.error);
  setText(ui['sign-in-error'], state.signIn.error);
  // Nothing to sign out of in single-user mode (auth "off").
  setHidden(ui.account, !state.session || state.session.auth !== 'on');
  setText(ui['account-name'], state.session?.username ?? '');
}

function renderStatus() {
  const text = state.ready ? state.ready.text : t('checking');
  setText(ui.status, text);
  ui.status.classList.toggle('ok', Boolean(state.ready?.ok));
  ui.status.classList.toggle('bad', Boolean(state.ready && !state.ready.ok));
}

// ------------------------------------------------------------------ models

let modelsSignature = null;

export function describeModel(model) {
  if (!model) return '';
  const parts = [model.vision ? t('capVision', { count: model.max_images_per_message || 1 }) : t('capText')];
  if (model.context_length) parts.push(t('capContext', { tokens: model.context_length }));
  return parts.join(' · ');
}

function renderModels() {
  const select = ui['model-select'];
  const signature = JSON.stringify([state.models, state.modelsError]);
  if (signature !== modelsSignature) {
    modelsSignature = signature;
    const options = (state.models ?? []).map((model) => {
      const option = document.createElement('option');
      option.value = model.id;
      option.textContent = model.parent ? `${model.id} (${t('adapterOf', { parent: model.parent })})` : model.id;
      return option;
    });
    if (!state.models) {
      const option = document.createElement('option');
      option.textContent = state.modelsError ? '—' : t('modelsLoading');
      options.push(option);
    }
    select.replaceChildren(...options);
  }
  const model = selectedModel();
  if (model && select.value !== model.id) select.value = model.id;
  select.disabled = !state.models?.length || Boolean(state.chat);
  const info = state.modelsError ? t('modelsFailed', { error: state.modelsError }) : describeModel(model);
  setText(ui['model-info'], info);
  ui['model-info'].classList.toggle('bad', Boolean(state.modelsError));
}

// ------------------------------------------------------------------ sidebar

let sidebarSignature = null;

function renderSidebar() {
  ui.chat.classList.toggle('sidebar-open', state.sidebarOpen);
  ui['sidebar-toggle'].setAttribute('aria-expanded', String(state.sidebarOpen));
  setHidden(ui['conversations-error'], !state.conversationsError);
  setText(ui['conversations-error'], state.conversationsError);
  setHidden(ui['load-more-button'], state.nextOffset == null);
  setHidden(ui['conversations-empty'], state.conversations.length > 0 || Boolean(state.conversationsError));

  const signature = JSON.stringify([state.conversations.map((c) => [c.id, c.title]), state.currentId,
    state.renaming, Boolean(state.chat)]);
  if (signature === sidebarSignature) return;
  const focusedRename = document.activeElement?.classList.contains('rename-input');
  sidebarSignature = signature;
  ui['conversation-list'].replaceChildren(...state.conversations.map(conversationItem));
  if (state.renaming && !focusedRename) {
    const input = ui['conversation-list'].querySelector('.rename-input');
    input?.focus();
    input?.select();
  }
}

function conversationItem(conversation) {
  const item = document.createElement('li');
  item.className = 'conversation';
  item.dataset.id = conversation.id;
  const title = conversation.title || t('untitled');
  if (state.renaming === conversation.id) {
    const form = document.createElement('form');
    form.className = 'rename-form';
    const input = document.createElement('input');
    input.className = 'rename-input';
    input.value = conversation.title;
    input.maxLength = 200;
    input.required = true;
    input.setAttribute('aria-label', t('renameLabel', { title }));
    form.append(input);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      on.renameConversation(conversation.id, input.value);
    });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') on.cancelRename();
    });
    input.addEventListener('blur', () => on.cancelRename());
    item.append(form);
    return item;
  }
  const open = button(title, 'conversation-open', () => on.openConversation(conversation.id));
  open.title = title;
  if (conversation.id === state.currentId) open.setAttribute('aria-current', 'page');
  // Switching while an answer streams would orphan it: finish or stop it first.
  open.disabled = Boolean(state.chat) && conversation.id !== state.currentId;
  const rename = button('✎', 'icon-button rename-button', () => on.startRename(conversation.id),
    { 'aria-label': `${t('rename')}: ${title}`, title: t('rename') });
  const remove = button('×', 'icon-button delete-button', () => on.deleteConversation(conversation.id),
    { 'aria-label': `${t('delete')}: ${title}`, title: t('delete') });
  remove.disabled = Boolean(state.chat) && conversation.id === state.currentId;
  item.append(open, rename, remove);
  return item;
}

// ------------------------------------------------------------------ messages

const nodes = new Map();  // message key → its elements and what they show

function messageNode(message) {
  const root = document.createElement('article');
  root.className = `message ${message.role}`;
  const who = document.createElement('h3');
  who.className = 'who';
  root.append(who);
  for (const url of message.images) {
    const img = document.createElement('img');
    img.className = 'thumb';
    img.src = url;
    img.alt = t('sentImage');
    root.append(img);
  }
  const text = document.createElement('div');
  text.className = message.role === 'assistant' ? 'text markdown' : 'text plain';
  const info = document.createElement('p');
  info.className = 'info';
  const actions = document.createElement('div');
  actions.className = 'message-actions';
  root.append(text, info, actions);
  return { root, who, text, info, actions, error: null, shownText: null, highlighted: false, signature: null };
}

function isLast(message, role) {
  return state.messages.findLast((m) => m.role === role) === message;
}

function renderMessages() {
  const list = ui.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const keys = new Set(state.messages.map((m) => m.key));
  for (const [key, node] of nodes) {
    if (!keys.has(key)) {
      node.root.remove();
      nodes.delete(key);
    }
  }
  let previous = ui['empty-hint'];
  for (const message of state.messages) {
    let node = nodes.get(message.key);
    if (!node) {
      node = messageNode(message);
      nodes.set(message.key, node);
    }
    if (previous.nextSibling !== node.root) previous.after(node.root);
    previous = node.root;
    updateMessage(message, node);
  }
  setHidden(ui['empty-hint'], state.messages.length > 0 || state.loadingConversation);
  setHidden(ui['conversation-loading'], !state.loadingConversation);
  if (atBottom) list.scrollTop = list.scrollHeight;  // follow the answer unless scrolled up
}

function updateMessage(message, node) {
  setText(node.who, message.role === 'user' ? t('you') : t('assistant'));
  const waiting = message.streaming && !message.text && state.chat?.phase === 'waiting';
  if (message.role === 'assistant') {
    // Markdown is re-rendered only when the text changed; highlighting waits for the end.
    const highlight = !message.streaming;
    if (node.shownText !== message.text || node.highlighted !== highlight) {
      renderMarkdown(node.text, message.text, { highlight });
      node.shownText = message.text;
      node.highlighted = highlight;
    }
  } else {
    setText(node.text, message.text);
  }
  setHidden(node.text, !message.text);
  const info = waiting ? t('waiting') : messageInfo(message);
  setText(node.info, info);
  setHidden(node.info, !info);

  // The error element exists only while there is an error, so `.error` always means one.
  if (message.error && !node.error) {
    node.error = document.createElement('p');
    node.error.className = 'error';
    node.error.setAttribute('role', 'alert');
    node.info.after(node.error);
  } else if (!message.error && node.error) {
    node.error.remove();
    node.error = null;
  }
  if (node.error) setText(node.error, message.error);

  node.root.classList.toggle('streaming', message.streaming);
  node.root.setAttribute('aria-busy', String(message.streaming));
  renderActions(message, node);
}

function messageInfo(message) {
  const parts = [];
  if (message.model) parts.push(t('modelInfo', { model: message.model }));
  if (Number.isFinite(message.tokens)) parts.push(t('tokens', { count: message.tokens }));
  if (message.doneReason === 'length') parts.push(t('cutByLength'));
  if (message.status === 'stopped') parts.push(t('stopped'));
  else if (message.status === 'incomplete' && !message.streaming) parts.push(t('incomplete'));
  return parts.join(' · ');
}

// The buttons under a message, rebuilt only when which ones apply changes.
function renderActions(message, node) {
  const idle = !state.chat;
  const wanted = [];
  if (message.retry && idle) wanted.push('retry');
  if (message.role === 'assistant' && message.text && !message.streaming) wanted.push('copy');
  if (message.role === 'assistant' && idle && isLast(message, 'assistant') && !message.retry
      && lastUserBefore(message)) wanted.push('regenerate');
  if (message.role === 'user' && idle && isLast(message, 'user')) wanted.push('edit');
  const signature = wanted.join(',');
  if (signature === node.signature) return;
  node.signature = signature;
  node.actions.replaceChildren(...wanted.map((action) => {
    if (action === 'retry') return button(t('retry'), 'retry-button', () => on.retry(message));
    if (action === 'copy') {
      const copy = button(t('copy'), 'copy-button secondary small', async () => {
        await on.copy(message.text);
        copy.textContent = t('copied');
      });
      return copy;
    }
    if (action === 'regenerate') return button(t('regenerate'), 'regenerate-button secondary small', () => on.regenerate());
    return button(t('edit'), 'edit-button secondary small', () => on.editLast(message));
  }));
  setHidden(node.actions, wanted.length === 0);
}

function lastUserBefore(message) {
  const index = state.messages.indexOf(message);
  return state.messages.slice(0, index).findLast((m) => m.role === 'user');
}

// ------------------------------------------------------------------ composer

function renderComposer() {
  const input = ui['message-input'];
  if (input.value !== state.draft.text) input.value = state.draft.text;  // keeps the caret otherwise

  setHidden(ui['image-preview-box'], !state.draft.imageUrl);
  if (state.draft.imageUrl) {
    if (ui['image-preview'].getAttribute('src') !== state.draft.imageUrl) ui['image-preview'].src = state.draft.imageUrl;
  } else {
    ui['image-preview'].removeAttribute('src');
  }

  // The image button is disabled with the reason in words (a disabled button shows no
  // tooltip, so the reason is visible text, tied to the button by aria-describedby).
  const reason = imageRefusal();
  ui['image-button'].disabled = Boolean(reason);
  ui['image-input'].disabled = Boolean(reason);
  setHidden(ui['image-reason'], !reason);
  setText(ui['image-reason'], reason);

  const busy = Boolean(state.chat);
  const voiceBusy = state.voice.phase !== 'idle';
  ui['send-button'].disabled = busy || voiceBusy || !state.draft.text.trim() || state.loadingConversation;
  ui['stop-button'].disabled = !busy;
  setHidden(ui['drop-hint'], !state.dragging);
  ui.composer.classList.toggle('dragging', state.dragging);
}

// Why no image can be attached now ('' when one can).
export function imageRefusal() {
  const model = selectedModel();
  if (model && !model.vision) return t('noImagesModel', { model: model.id });
  return '';
}

// ------------------------------------------------------------------ voice

function renderVoice() {
  const { phase, elapsed, level, live } = state.voice;
  const recording = phase === 'recording' || phase === 'opening';
  const record = ui['record-button'];
  setText(record, recording ? t('stopRecording') : t('record'));
  record.classList.toggle('recording', recording);
  record.setAttribute('aria-pressed', String(recording));
  record.disabled = phase === 'transcribing';
  setHidden(ui['record-timer'], !recording);
  setText(ui['record-timer'], `${String(Math.floor(elapsed / 60)).padStart(2, '0')}:${String(elapsed % 60).padStart(2, '0')}`);
  setHidden(ui['level-meter'], phase !== 'recording');
  const bar = ui['level-meter'].firstElementChild;
  const scale = `scaleX(${level.toFixed(2)})`;
  if (bar.style.transform !== scale) bar.style.transform = scale;
  setHidden(ui['live-transcript'], !(live && phase !== 'idle'));
  setText(ui['live-transcript'], live);
  if (ui['asr-language'].value !== state.prefs.asrLanguage) ui['asr-language'].value = state.prefs.asrLanguage;
  ui['auto-send'].checked = state.prefs.autoSend;
}

// ------------------------------------------------------------------ notice

let renderedNotice;

function renderNotice() {
  if (renderedNotice === state.notice) return;  // rebuilt only when it changes (it may hold a link)
  renderedNotice = state.notice;
  const notice = ui.notice;
  setHidden(notice, !state.notice);
  notice.textContent = state.notice?.text ?? '';
  if (state.notice?.link) {
    const a = document.createElement('a');
    a.href = a.textContent = state.notice.link;
    const help = document.createElement('a');
    help.href = '/help.html';
    help.textContent = ` (${t('help')})`;
    notice.append(a, help);
  }
  notice.classList.toggle('error', Boolean(state.notice?.error));
  notice.setAttribute('role', state.notice?.error ? 'alert' : 'status');
}
