// The one state object of the page. Actions (app.js) change it and call render(); render
// (render.js) is the only code that writes to the DOM. Preferences persist in localStorage.

const PREFS_KEY = 'chatbot.prefs';

function loadPrefs() {
  const defaults = { model: '', asrLanguage: 'es', autoSend: false, theme: '' };
  try {
    return { ...defaults, ...JSON.parse(localStorage.getItem(PREFS_KEY) || '{}') };
  } catch {
    return defaults;
  }
}

export function savePrefs() {
  localStorage.setItem(PREFS_KEY, JSON.stringify(state.prefs));
}

export const state = {
  // undefined: not asked yet; null: signed out (the sign-in form shows); else /api/auth/me
  session: undefined,
  signIn: { busy: false, error: '' },
  ready: null,            // {ok, text}: the /readyz line
  models: null,           // chat entries of /v1/models; null until loaded
  modelsError: '',
  conversations: [],      // [{id, title, model, updated_at}], newest activity first
  nextOffset: null,       // for "load more"
  conversationsError: '',
  renaming: null,         // id of the conversation whose title is being edited
  currentId: null,        // the open conversation; null: a new one, created on first send
  loadingConversation: false,
  // {key, id, role, text, images: [url], status, model, info, tokens, error, retry, streaming}
  messages: [],
  draft: { text: '', image: null, imageUrl: null },
  editing: false,         // false, or the user message taken back into the draft to edit
  chat: null,             // {controller, phase: 'waiting'|'streaming'} while a turn runs
  // phase: idle | opening | recording | transcribing; hold: push-to-talk rather than toggle
  voice: { phase: 'idle', hold: false, startedAt: 0, elapsed: 0, level: 0, live: '' },
  notice: null,           // {text, error, link?}: feedback about the composer
  dragging: false,        // an image is being dragged over the page
  sidebarOpen: false,     // narrow screens: the conversation drawer
  prefs: loadPrefs(),
};

let nextKey = 1;
// Page-side identity of a message (stored messages also have a server id).
export function newMessage(fields) {
  return { key: nextKey++, id: null, text: '', images: [], status: 'complete', model: '', info: '',
    tokens: null, error: '', retry: null, streaming: false, ...fields };
}

export function selectedModel() {
  return state.models?.find((model) => model.id === state.prefs.model) ?? state.models?.[0] ?? null;
}
