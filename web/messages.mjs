// Words a person understands for what the server or Uppy refused. The server's errors are JSON
// {"error": sentence, "code": machine code}; the code picks the words, the sentence adds detail.

const TYPES = 'JPEG, PNG, WebP, GIF, HEIC or AVIF';

const BY_CODE = {
  'unsupported-format': `This file is not a picture the server can use. Choose a ${TYPES} image.`,
  'unsupported-media-type': `This file is not a picture the server can use. Choose a ${TYPES} image.`,
  'invalid-image': 'The picture could not be read: the file may be damaged. Try another one.',
  'truncated-image': 'The picture is incomplete: the file ends early. Try saving it again.',
  'empty-file': 'This file is empty. Choose a picture.',
  'too-many-pixels': 'This picture has too many pixels. Crop it or choose a smaller one.',
  'image-too-large': 'This picture is too wide or too tall. Crop it or choose a smaller one.',
  'too-many-frames': 'This animation has too many frames. Choose a shorter one or a still picture.',
  'upload-too-large': 'This file is larger than the server accepts. Choose a smaller picture.',
  'file-too-large': 'This file is larger than the server accepts. Choose a smaller picture.',
  'rate-limited': 'You have sent many requests in a short time. Wait a minute, then press Retry.',
  'too-many-uploads': 'You have too many unfinished uploads. Finish or cancel one, or wait, then retry.',
  'too-many-bytes-in-flight': 'You have too many unfinished uploads. Finish or cancel one, or wait, then retry.',
  'invalid-token': 'Your sign-in token was not accepted (it may have expired). Mint a new one and sign in again.',
  'token-expired': 'Your sign-in token has expired. Mint a new one and sign in again.',
  'invalid-authorization': 'Your sign-in token was not accepted. Paste the whole token and sign in again.',
  unauthenticated: 'You are not signed in. Paste your token above and sign in.',
  'store-unavailable': 'The server is busy right now. Wait a moment, then press Retry.',
  'upload-expired': 'This upload waited too long and expired on the server. Remove it and choose the picture again.',
};

const BY_STATUS = {
  401: BY_CODE['invalid-token'],
  413: BY_CODE['upload-too-large'],
  415: BY_CODE['unsupported-format'],
  429: BY_CODE['rate-limited'],
  503: BY_CODE['store-unavailable'],
};

/** The server's {"error", "code"} body of an XMLHttpRequest, or null when it sent none. */
export function errorBody(xhr) {
  try {
    const body = JSON.parse(xhr?.responseText ?? '');
    return body && typeof body.code === 'string' ? body : null;
  } catch {
    return null;
  }
}

/** `{ text, detail }` for an upload Uppy's Tus plugin gave up on. */
export function describeUploadError(error, response) {
  const status = response?.status ?? 0;
  const body = errorBody(response?.body?.xhr);
  if (status === 0 || error?.isNetworkError) {
    return {
      text: 'The connection to the server was lost. Check your network, then press Retry: the upload goes on where it stopped.',
      detail: '',
    };
  }
  const text = (body && BY_CODE[body.code]) || BY_STATUS[status] || 'The upload failed.';
  return { text, detail: body?.error ?? '' };
}

/** Uppy's own refusals (before anything is sent), in the same words. */
export const RESTRICTION_STRINGS = {
  youCanOnlyUploadFileTypes: `This file is not a picture the server can use. Choose a ${TYPES} image.`,
  exceedsSize: '%{file} is too large: an avatar can be at most %{size}. Choose a smaller picture.',
  youCanOnlyUploadX: {
    0: 'One picture at a time: remove the one below to choose another.',
    1: 'One picture at a time: remove the one below to choose another.',
  },
};
