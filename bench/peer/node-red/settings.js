// Node-RED settings for the benchmark's peer (bench/scenarios/node-red-peer.ts starts it).
// Nothing secret is in this file or in the flow: the broker, the database and its credentials come
// from the environment (the flow's ${...} properties, flows_cred.json included, are substituted by
// Node-RED from process.env at start).
const { join } = require('node:path');

const userDir = process.env.NODE_RED_USER_DIR;
if (!userDir) throw new Error('NODE_RED_USER_DIR must name the folder Node-RED runs in (the benchmark copies flows.json and flows_cred.json there)');

module.exports = {
  userDir,
  flowFile: join(userDir, 'flows.json'),
  // flows_cred.json holds only ${...} references to the environment: nothing to encrypt.
  credentialSecret: false,
  uiHost: '127.0.0.1',
  uiPort: Number(process.env.NODE_RED_PORT || 1880),
  // Info shows the broker connection (the benchmark waits for it); nothing is logged per message.
  logging: { console: { level: 'info', metrics: false, audit: false } },
  editorTheme: { projects: { enabled: false } },
  diagnostics: { enabled: false, ui: false },
  telemetry: { enabled: false },
  externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
};
