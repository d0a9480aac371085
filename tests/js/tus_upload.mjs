// Drives tus-js-client (Node.js) for the end-to-end tests: one upload per run.
//
//   node tus_upload.mjs '{"endpoint": "...", "file": "...", "token": "...", ...}'
//
// Options: chunkSize, parallelUploads, uploadUrl (resume that upload), abortAfter (abort once
// this many bytes were accepted, as a user closing the app would), metadata.
// Prints one JSON line: {"outcome": "success"|"aborted"|"error", "url", "requests": [...], "error"}.
import { readFileSync } from "node:fs";
import { Upload } from "tus-js-client";

const options = JSON.parse(process.argv[2]);
const file = readFileSync(options.file);
const requests = [];
let upload;

function finish(outcome, extra = {}) {
  process.stdout.write(JSON.stringify({ outcome, url: upload.url, requests, ...extra }) + "\n");
  process.exit(outcome === "error" ? 1 : 0);
}

upload = new Upload(file, {
  endpoint: options.endpoint,
  uploadUrl: options.uploadUrl ?? null,
  chunkSize: options.chunkSize ?? Infinity,
  parallelUploads: options.parallelUploads ?? 1,
  metadata: options.metadata ?? { filename: "avatar.jpg", filetype: "image/jpeg" },
  headers: { Authorization: `Bearer ${options.token}` },
  retryDelays: [0, 200, 500],
  onBeforeRequest(req) {
    requests.push({
      method: req.getMethod(),
      url: req.getURL(),
      offset: req.getHeader("Upload-Offset") ?? null,
      concat: req.getHeader("Upload-Concat") ?? null,
    });
  },
  onChunkComplete(_chunkSize, accepted) {
    if (options.abortAfter !== undefined && accepted >= options.abortAfter) {
      upload.abort().then(() => finish("aborted", { accepted }));
    }
  },
  onSuccess() {
    finish("success");
  },
  onError(error) {
    finish("error", { error: String(error) });
  },
});

upload.start();
