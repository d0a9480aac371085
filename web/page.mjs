// The avatar page: sign in with a token, see the current avatar, choose or shoot a picture,
// crop it square, upload it with tus (resumable, retried, surviving a reload), see it replace
// the old one. Uppy does the uploading UI; this module wires it to the server.
import { Dashboard, GoldenRetriever, ImageEditor, Tus, Uppy, Webcam } from '/web/vendor/uppy.min.mjs';
import { RESTRICTION_STRINGS, describeUploadError } from '/web/messages.mjs';

const TOKEN_KEY = 'avatar-page.token';
const ENDPOINT = '/files/';
// Each PATCH carries at most this much: a proxy that drops a cut request body then loses at
// most one chunk, and the server acknowledges every chunk it has stored.
const CHUNK_BYTES = 1024 * 1024;
// Milliseconds before each retry of a failed request (then HEAD asks the server where it stands).
const RETRY_DELAYS = [250, 1000, 3000, 5000, 10000, 20000];
const ACCEPTED = [
  'image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/heic', 'image/heif', 'image/avif',
  '.jpg', '.jpeg', '.png', '.webp', '.gif', '.heic', '.heif', '.avif',
];

const $ = (id) => document.getElementById(id);

// sessionStorage: the token lives as long as this tab, is not shared with other tabs, and is
// only ever sent in the Authorization header.
const token = () => sessionStorage.getItem(TOKEN_KEY) ?? '';
const authorization = () => ({ Authorization: `Bearer ${token()}` });

function showMessage(text, kind = 'info', detail = '') {
  const box = $('message');
  box.textContent = detail && detail !== text ? `${text} (${detail})` : text;
  box.className = `message ${kind}`;
  box.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  box.hidden = false;
}

function clearMessage() {
  $('message').hidden = true;
}

/** The user a JWT names, for display only (the server checks the signature, not this page). */
function tokenSubject(jwt) {
  try {
    const payload = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).sub ?? null;
  } catch {
    return null;
  }
}

function megabytes(bytes) {
  const mb = bytes / (1024 * 1024);
  return `${Number.isInteger(mb) ? mb : mb.toFixed(1)} MB`;
}

/** The largest upload the server takes: tus announces it as Tus-Max-Size on OPTIONS. */
async function maxImageBytes() {
  try {
    const answer = await fetch(ENDPOINT, { method: 'OPTIONS', headers: { 'Tus-Resumable': '1.0.0' } });
    const value = Number.parseInt(answer.headers.get('Tus-Max-Size') ?? '', 10);
    return Number.isFinite(value) && value > 0 ? value : null;
  } catch {
    return null;
  }
}

async function refreshAvatar() {
  const img = $('avatar');
  const caption = $('avatar-caption');
  if (!token()) {
    img.hidden = true;
    caption.textContent = 'Sign in to see your avatar.';
    return;
  }
  // A user who chose Gravatar is redirected there; the page does not follow it off its origin.
  const answer = await fetch('/me/avatar', { headers: authorization(), cache: 'no-store', redirect: 'manual' });
  if (answer.type === 'opaqueredirect') {
    img.hidden = true;
    caption.textContent = 'Your avatar comes from Gravatar. Upload a picture to use your own.';
  } else if (answer.status === 404) {
    img.hidden = true;
    caption.textContent = 'You have no avatar yet.';
  } else if (answer.ok) {
    const avatar = await answer.json();
    img.src = avatar.urls['256'] ?? Object.values(avatar.urls)[0];
    img.srcset = avatar.urls['512'] ? `${avatar.urls['512']} 2x` : '';
    img.dataset.version = avatar.version;
    img.hidden = false;
    caption.textContent = `Updated ${new Date(avatar.updated_at).toLocaleString()}.`;
  } else {
    const { text, detail } = describeUploadError(null, { status: answer.status, body: { xhr: { responseText: await answer.text() } } });
    showMessage(text, 'error', detail);
    if (answer.status === 401) signOut();
  }
}

function renderSignedIn(uppy) {
  const current = token();
  $('signin-form').hidden = Boolean(current);
  $('signed-in').hidden = !current;
  $('who').textContent = tokenSubject(current) ?? 'the token’s user';
  uppy.getPlugin('Dashboard').setOptions({ disabled: !current });
}

let signOut = () => {};

function wireSignIn(uppy) {
  signOut = () => {
    sessionStorage.removeItem(TOKEN_KEY);
    renderSignedIn(uppy);
    refreshAvatar();
  };
  $('signin-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = $('token').value.trim().replace(/^Bearer\s+/i, '');
    $('token').value = '';
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    clearMessage();
    renderSignedIn(uppy);
    await refreshAvatar();
  });
  $('signout').addEventListener('click', () => signOut());
  renderSignedIn(uppy);
}

function createUppy(maxBytes) {
  const sizeNote = maxBytes ? `, at most ${megabytes(maxBytes)}` : '';
  const uppy = new Uppy({
    id: 'avatar', // names Golden Retriever's stored state
    autoProceed: false,
    restrictions: { maxNumberOfFiles: 1, maxFileSize: maxBytes, allowedFileTypes: ACCEPTED },
    locale: { strings: RESTRICTION_STRINGS },
    onBeforeUpload: () => {
      if (token()) return true;
      showMessage('Sign in first: paste your token above.', 'error');
      return false;
    },
  });
  uppy
    .use(Dashboard, {
      inline: true,
      target: '#uploader',
      width: '100%',
      height: 440,
      theme: 'auto',
      autoOpen: 'imageEditor',
      showProgressDetails: true,
      proudlyDisplayPoweredByUppy: false,
      note: `One picture${sizeNote}: JPEG, PNG, WebP, GIF, HEIC or AVIF. You can crop it square before uploading.`,
    })
    .use(ImageEditor, {
      // Avatars are square: the crop box keeps a 1:1 ratio; the server then scales, never crops again.
      cropperOptions: {
        aspectRatio: 1,
        initialAspectRatio: 1,
        croppedCanvasOptions: { maxWidth: 4096, maxHeight: 4096, imageSmoothingQuality: 'high' },
      },
      actions: { cropSquare: false, cropWidescreen: false, cropWidescreenVertical: false },
    })
    .use(Webcam, { modes: ['picture'], mirror: true, showVideoSourceDropdown: true })
    .use(Tus, {
      endpoint: ENDPOINT,
      chunkSize: CHUNK_BYTES,
      retryDelays: RETRY_DELAYS,
      limit: 1,
      headers: authorization,
      allowedMetaFields: ['name', 'type'],
      // Choosing the same picture again later starts a new upload instead of finding the old one.
      removeFingerprintOnSuccess: true,
    })
    // Its default keeps only files up to 10 MiB for after a reload; an avatar may be larger.
    .use(GoldenRetriever, { indexedDB: { maxFileSize: Math.max(maxBytes ?? 0, 10 * 1024 * 1024) } });
  return uppy;
}

function wireEvents(uppy) {
  uppy.on('file-added', () => clearMessage());
  uppy.on('restriction-failed', (_file, error) => showMessage(error.message, 'error'));
  uppy.on('upload-error', (_file, error, response) => {
    const { text, detail } = describeUploadError(error, response);
    showMessage(text, 'error', detail);
  });
  uppy.on('upload-success', async () => {
    showMessage('Your new avatar is live.', 'ok');
    await refreshAvatar();
  });
  // Golden Retriever brought back a file from before a reload or a closed tab: go on uploading
  // it from where the server stands, as the person had already asked for it.
  uppy.on('restored', () => {
    const files = uppy.getFiles();
    if (!token() || files.length === 0 || files.some((file) => file.isGhost)) return;
    showMessage('Resuming the upload you started before the page was closed.');
    uppy.emit('restore-confirmed');
  });
}

const uppy = createUppy(await maxImageBytes());
wireEvents(uppy);
wireSignIn(uppy);
refreshAvatar();
