// The user's conversations on the gateway, and which one is open. The open one lives in the
// URL hash (#c=ID): a reload, a bookmark or the back button bring it back.

import { api } from './transport.js';

const PAGE = 30;

export function listConversations(offset = 0) {
  return api(`/api/conversations?limit=${PAGE}&offset=${offset}`);
}

export function createConversation(model) {
  // An empty title: the gateway names it after the start of the first message.
  return api('/api/conversations', { method: 'POST', body: model ? { model } : {} });
}

export function loadConversation(id) {
  return api(`/api/conversations/${encodeURIComponent(id)}`);
}

export function renameConversation(id, title) {
  return api(`/api/conversations/${encodeURIComponent(id)}`, { method: 'PATCH', body: { title } });
}

export function deleteConversation(id) {
  return api(`/api/conversations/${encodeURIComponent(id)}`, { method: 'DELETE' });
}

// Deletes the message and every later one (regenerate, edit and resend).
export function truncateConversation(id, messageId) {
  return api(`/api/conversations/${encodeURIComponent(id)}/messages/${encodeURIComponent(messageId)}`,
    { method: 'DELETE' });
}

export function idFromHash() {
  const match = /^#c=([\w-]+)$/.exec(location.hash);
  return match ? match[1] : null;
}

// pushState rather than location.hash = …: the page changes the conversation itself, so it
// must not also get a hashchange for it; the back button still goes to the previous one.
export function showInHash(id) {
  if (idFromHash() === id) return;
  const url = id ? `#c=${id}` : location.pathname + location.search;
  history.pushState(null, '', url);
}

// A stored message (GET /api/conversations/{id}) → the page's message shape.
export function fromStored(message) {
  return {
    id: message.id,
    role: message.role,
    text: message.content ?? '',
    images: (message.images ?? []).map((image) => image.url),
    status: message.status,
    model: message.model ?? '',
    tokens: message.completion_tokens || null,
    doneReason: message.finish_reason || undefined,  // "length": the note about the token limit stays
    error: message.status === 'failed' ? (message.error || '') : '',
  };
}
