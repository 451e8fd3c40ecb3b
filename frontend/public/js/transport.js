// Network code: knows the gateway's API, nothing about the page.
//
// Shape taken from llama.cpp's old completion.js: the chat stream is an async generator of
// parsed events, fed by a partial-line buffer, and cancelled through an AbortController
// (closing the connection is what stops the model upstream).

// An HTTP answer that is not 2xx, with what the gateway said: {"error", "error_type"}.
export class HttpError extends Error {
  constructor(status, message, type = '', retryAfter = null) {
    super(message);
    this.status = status;
    this.type = type;
    this.retryAfter = retryAfter;  // seconds, from Retry-After on a 429
  }
}

// Called on every 401, so the page can show the sign-in form (set by app.js).
let onUnauthorized = () => {};
export function whenUnauthorized(callback) { onUnauthorized = callback; }

export async function httpError(response) {
  let message = '';
  let type = '';
  try {
    const body = await response.clone().json();
    message = body.error || '';
    type = body.error_type || '';
  } catch {
    message = (await response.text().catch(() => '')).trim().slice(0, 200);
    if (message.startsWith('<')) message = '';  // a proxy's HTML error page says nothing more
  }
  if (response.status === 401) onUnauthorized();
  const retryAfter = Number(response.headers.get('Retry-After')) || null;
  return new HttpError(response.status, message, type, retryAfter);
}

// JSON in, JSON out; throws HttpError for non-2xx (and TypeError when the network fails).
export async function api(path, { method = 'GET', body, signal } = {}) {
  const response = await fetch(path, {
    method,
    signal,
    cache: 'no-store',
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await httpError(response);
  return response.status === 204 ? null : response.json();
}

// Server-Sent Events over fetch (EventSource cannot POST a form). Yields {event, data}.
// Chunks can split a line anywhere, so an incomplete last line waits in `buffer`;
// TextDecoder in stream mode holds back UTF-8 sequences split between chunks.
export async function* readEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
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
    // Reached on abort, on an error event, or when the consumer stops early: closing the
    // body closes the connection, which is what cancels generation upstream.
    reader.cancel().catch(() => {});
  }
}

// One chat turn: yields {type: 'meta'|'delta'|'done', ...payload}; throws HttpError for a
// refusal (before or during the stream) and AbortError when `signal` fires. A stream that
// ends without `done` was cut (proxy, network), which is an error too, never silent.
export async function* streamChat({ text, image, conversationId, model, signal }) {
  const form = new FormData();
  form.append('message', text);
  if (image) form.append('image', image, image.name || 'imagen');
  if (conversationId) form.append('conversation_id', conversationId);
  if (model) form.append('model', model);
  const response = await fetch('/api/chat/stream', {
    method: 'POST', body: form, headers: { Accept: 'text/event-stream' }, signal,
  });
  if (!response.ok) throw await httpError(response);
  for await (const { event, data } of readEvents(response.body)) {
    const payload = parseJson(data);
    if (event === 'error') throw new HttpError(0, payload.error || '', payload.error_type || 'stream');
    yield { type: event, ...payload };
    if (event === 'done') return;
  }
  throw new HttpError(0, '', 'cut');
}

function parseJson(data) {
  try {
    return JSON.parse(data) ?? {};
  } catch {
    return {};
  }
}

export async function transcribeClip(clip, filename, language) {
  const form = new FormData();
  form.append('audio', clip, filename);
  if (language) form.append('language', language);
  const response = await fetch('/api/transcribe', { method: 'POST', body: form });
  if (!response.ok) throw await httpError(response);
  return response.json();
}
