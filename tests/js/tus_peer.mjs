// The reference tus server for `make bench-tus`: @tus/server with @tus/file-store, on loopback.
//   node tests/js/tus_peer.mjs PORT DIR
// Prints one JSON line when it listens. It does not fsync: the project does, for every PATCH.
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const port = parseInt(process.argv[2], 10);
const directory = process.argv[3];
const server = new Server({ path: '/files', datastore: new FileStore({ directory }) });
const http = server.listen({ host: '127.0.0.1', port }, () => {
  console.log(JSON.stringify({ ready: true, port, pid: process.pid }));
});
http.keepAliveTimeout = 65000;
const stop = () => http.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
