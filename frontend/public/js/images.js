// Images are made small in the browser before upload: a phone photo of 4000 px and 6 MB
// becomes ≤ 1600 px and a few hundred KB, so uploads stay far below the server's limit
// and vision models (which resize to well under 1600 px anyway) get the same detail.
// Redrawing also applies the EXIF orientation and drops the EXIF data (GPS position…).

import { t } from './i18n.js';

export const MAX_SIDE = 1600;
const ACCEPTED = ['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/bmp'];
// Larger files are refused before decoding: decoding one could exhaust a phone's memory.
const MAX_INPUT_MB = 40;
// nginx's MAX_UPLOAD_MB default; a downscaled image is far below it.
const MAX_UPLOAD_MB = 25;

export class ImageError extends Error {}

// File → Blob ready to upload (JPEG or PNG, long side ≤ MAX_SIDE). Throws ImageError
// with a sentence for the user.
export async function prepareImage(file) {
  if (!ACCEPTED.includes(file.type)) {
    throw new ImageError(t('imageFormat', { type: file.type || file.name || '?' }));
  }
  if (file.size > MAX_INPUT_MB * 1024 * 1024) {
    throw new ImageError(t('imageTooLarge', { size: megabytes(file.size), limit: MAX_INPUT_MB }));
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
  } catch {
    throw new ImageError(t('imageUnreadable'));
  }
  try {
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    // Small PNGs pass as they are (no EXIF to worry about, and re-encoding gains nothing).
    if (scale === 1 && file.type === 'image/png') return file;
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    // PNG keeps transparency and sharp text of screenshots; photos are JPEG.
    const type = file.type === 'image/png' ? 'image/png' : 'image/jpeg';
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, type, 0.9));
    if (!blob) throw new ImageError(t('imageUnreadable'));
    if (blob.size > MAX_UPLOAD_MB * 1024 * 1024) {
      throw new ImageError(t('imageTooLarge', { size: megabytes(blob.size), limit: MAX_UPLOAD_MB }));
    }
    const name = (file.name || 'imagen').replace(/\.[^.]*$/, '') + (type === 'image/png' ? '.png' : '.jpg');
    return new File([blob], name, { type });
  } finally {
    bitmap.close();
  }
}

function megabytes(bytes) {
  return (bytes / 1024 / 1024).toFixed(1);
}
