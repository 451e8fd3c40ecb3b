// Model text → safe, readable DOM: marked parses the markdown, DOMPurify sanitises the HTML
// it produces, highlight.js colours code blocks, and each block gets a copy button.
//
// Two layers on purpose: raw HTML in the model's text is shown as text (a model explaining
// HTML should show the tags, not run them), and DOMPurify strips anything that still slips
// through (javascript: links, event handlers). The page's CSP forbids inline scripts too.

import { Marked } from '/vendor/marked.esm.js';
import DOMPurify from '/vendor/purify.es.js';
import hljs from '/vendor/highlight.min.js';
import { t } from './i18n.js';

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({
  gfm: true,
  breaks: true,  // models write single newlines meaning line breaks
  renderer: {
    html: ({ text }) => escapeHtml(text),
  },
});

// Model-made <img> would fetch from anywhere the model names (a tracking pixel, or a CSP
// violation); forms and styles have no business in an answer either.
const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['img', 'style', 'form', 'input', 'button', 'textarea', 'select', 'video', 'audio', 'iframe'],
  RETURN_DOM_FRAGMENT: true,
};

// Links open in a new tab and give the target no handle on this page.
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

// Replaces `container`'s content with `text` rendered. `highlight` is off while a stream is
// still arriving (re-highlighting a growing block on every token is wasted work).
export function renderMarkdown(container, text, { highlight = true } = {}) {
  const fragment = DOMPurify.sanitize(marked.parse(text), PURIFY);
  for (const pre of fragment.querySelectorAll('pre')) decorateCode(pre, highlight);
  container.replaceChildren(fragment);
}

function decorateCode(pre, highlight) {
  const code = pre.querySelector('code');
  if (!code) return;
  const language = [...code.classList].find((c) => c.startsWith('language-'))?.slice(9) ?? '';
  if (highlight) {
    if (language && !hljs.getLanguage(language)) code.classList.remove(`language-${language}`);
    hljs.highlightElement(code);  // works on the text only: it escapes what it writes
  }
  const bar = document.createElement('div');
  bar.className = 'code-bar';
  const label = document.createElement('span');
  label.textContent = language;
  const copy = document.createElement('button');
  copy.type = 'button';
  copy.className = 'copy-code';
  copy.textContent = t('copy');
  copy.setAttribute('aria-label', t('copyCode'));
  copy.addEventListener('click', async () => {
    await copyText(code.textContent);
    copy.textContent = t('copied');
  });
  bar.append(label, copy);
  const block = document.createElement('div');
  block.className = 'code-block';
  pre.replaceWith(block);
  block.append(bar, pre);
}

// The clipboard API needs a secure context (https or localhost); the page may be on plain
// http from another machine, where the old execCommand path still works.
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return;
    } catch {
      // permission refused (e.g. a headless browser): fall through
    }
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.append(area);
  area.select();
  document.execCommand('copy');
  area.remove();
}
