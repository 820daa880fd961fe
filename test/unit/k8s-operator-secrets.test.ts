/**
 * The Secrets docs/kubernetes.md has the operator make with `kubectl create secret ... | kubectl
 * apply`, run as printed (the real kubectl, client side: no cluster here) on the files of a fleet
 * of the size the project is built for, and measured against what the API server stores:
 * - a client-side `kubectl apply` keeps a copy of the whole object in the annotation
 *   kubectl.kubernetes.io/last-applied-configuration, and the server refuses an object whose
 *   annotations exceed 256 KiB (apimachinery's TotalAnnotationSizeLimitB); a server-side apply
 *   (`--server-side`) keeps none;
 * - a Secret's data may not exceed 1 MiB (MaxSecretSize), however it is applied.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { tempDir } from '../helpers/pki.ts';

const repoRoot = join(import.meta.dirname, '..', '..');
const kubectl = process.env.KUBECTL ?? 'kubectl';
const SKIP = spawnSync(kubectl, ['version', '--client'], { stdio: 'ignore' }).error ? `no kubectl found (${kubectl})` : false;

const ANNOTATIONS_MAX_BYTES = 256 * 1024;
const SECRET_MAX_BYTES = 1024 * 1024;
/** The fleet the project is sized and measured for (docs/performance.md: 10,000 devices). */
const DEVICES = 10_000;
/** What docs/kubernetes.md says the token Secrets hold at most. */
const TOKEN_DEVICES = 2_000;

/** The documented `kubectl ... create secret generic NAME ... | kubectl apply ...` pipelines, joined across `\` lines. */
function documentedPipelines(): Array<{ name: string; create: string; apply: string }> {
  const doc = readFileSync(join(repoRoot, 'docs', 'kubernetes.md'), 'utf8').replace(/\\\n\s*/g, '');
  return [...doc.matchAll(/^(kubectl [^\n|]*create secret generic (\S+)[^\n|]*)\|\s*(kubectl apply[^\n]*)$/gm)].map((m) => ({ name: m[2] as string, create: (m[1] as string).trim(), apply: (m[3] as string).trim() }));
}

describe("docs/kubernetes.md: the operator's Secrets, made as printed, fit what the API server stores for a full fleet", { skip: SKIP }, () => {
  let site: { dir: string; cleanup(): void } | undefined;

  before(() => {
    site = tempDir('k8s-secrets');
    // A signing key as fieldstream-admin writes it (64 hex digits and a newline), one per device.
    const keys = join(site.dir, 'certs', 'internal', 'device-keys');
    mkdirSync(keys, { recursive: true });
    for (let i = 0; i < DEVICES; i++) writeFileSync(join(keys, `meter-${String(i).padStart(5, '0')}.key`), `${'0a9086cbf5b795407b84f97ca605d2829b281112006d15f4836d4d5350cb62d9'}\n`);
    // device-tokens.json as pki/device-tokens.ts writes it, one active token per device.
    const devices = Object.fromEntries(
      Array.from({ length: TOKEN_DEVICES }, (_, i) => [
        `plc-${String(i).padStart(5, '0')}`,
        {
          state: 'active',
          tokenId: '76e0a0f123babc99',
          issuedAt: '2026-12-05T17:40:00.555Z',
          expiresAt: '2028-12-04T17:40:00.555Z',
          scrypt: { alg: 'scrypt', N: 32768, r: 8, p: 1, keyLen: 32, salt: 'NWMGmjjj7GY4Rh5SLd4PtQ==', hash: 'vZgBKFOdYR8DcCD+IsfaenOTymnMn1l6HLpgcfXWf94=' },
        },
      ]),
    );
    mkdirSync(join(site.dir, 'certs', 'dmz', 'tokens'), { recursive: true });
    writeFileSync(join(site.dir, 'certs', 'dmz', 'tokens', 'device-tokens.json'), `${JSON.stringify({ version: 1, devices }, null, 2)}\n`);
  });
  after(() => site?.cleanup());

  const fleetSized = ['device-keys', 'gateway-device-tokens', 'console-device-tokens'];

  it('the doc makes each Secret that grows with the fleet by a pipeline', () => {
    assert.deepEqual(
      documentedPipelines()
        .map((p) => p.name)
        .filter((n) => fleetSized.includes(n)),
      fleetSized,
    );
  });

  for (const name of fleetSized) {
    it(`${name}: within 1 MiB, and applied without a copy in an annotation past 256 KiB`, () => {
      const p = documentedPipelines().find((x) => x.name === name) ?? assert.fail(`no pipeline for ${name}`);
      const [command, ...args] = p.create.split(/\s+/);
      assert.equal(command, 'kubectl');
      const yaml = execFileSync(kubectl, args, { cwd: site?.dir, encoding: 'utf8', maxBuffer: 64 << 20 });
      const [secret] = z
        .array(z.object({ data: z.record(z.string(), z.string()) }).passthrough())
        .parse(JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump([yaml.safe_load(sys.stdin)], sys.stdout)'], { input: yaml, encoding: 'utf8', maxBuffer: 64 << 20 })));
      const data = Object.values(secret?.data ?? {}).reduce((n, v) => n + Buffer.from(v, 'base64').length, 0);
      assert.ok(data <= SECRET_MAX_BYTES, `${name}: ${data} bytes of data, over a Secret's 1 MiB`);
      // What a client-side apply would store as kubectl.kubernetes.io/last-applied-configuration.
      const lastApplied = Buffer.byteLength(JSON.stringify(secret));
      const serverSide = /\s--server-side\b/.test(p.apply);
      assert.ok(serverSide || lastApplied <= ANNOTATIONS_MAX_BYTES, `${name}: \`${p.apply}\` keeps a ${lastApplied}-byte copy in an annotation; the API server refuses past ${ANNOTATIONS_MAX_BYTES}`);
    });
  }
});
