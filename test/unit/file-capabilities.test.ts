/**
 * An image whose program carries file capabilities cannot run with those capabilities dropped: the
 * kernel refuses to exec a binary whose file capabilities have the effective bit set when they are
 * not all in the process's bounding set ("exec /usr/bin/caddy: operation not permitted",
 * capabilities(7), "Safety checking for capability-dumb binaries"). The official Caddy image does
 * `setcap cap_net_bind_service=+ep /usr/bin/caddy` (caddyserver/caddy-docker, 2.8/alpine/Dockerfile),
 * and the compose file and the Kubernetes manifests drop every capability of every container.
 *
 * There is no Docker engine here, so the exec is reproduced as each container would run it: a copy
 * of Debian's caddy given the image's file capability, run as the container's user with the
 * bounding set its manifest leaves (the runtime's default set, minus cap_drop/drop, plus
 * cap_add/add) and no new privileges. Needs root (setcap, setpriv).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { tempDir } from '../helpers/pki.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

/** The file capabilities of the images' programs, as their Dockerfiles set them. */
const FILE_CAPABILITIES: ReadonlyArray<{ image: RegExp; program: string; caps: string }> = [{ image: /^caddy:/, program: 'caddy', caps: 'cap_net_bind_service=+ep' }];

/** Docker's and containerd's default capability set (what cap_add/add adds to when ALL is not dropped). */
const RUNTIME_DEFAULT = ['CHOWN', 'DAC_OVERRIDE', 'FSETID', 'FOWNER', 'MKNOD', 'NET_RAW', 'SETGID', 'SETUID', 'SETFCAP', 'SETPCAP', 'NET_BIND_SERVICE', 'SYS_CHROOT', 'KILL', 'AUDIT_WRITE'];

function boundingSet(drop: readonly string[] = [], add: readonly string[] = []): string[] {
  const dropped = drop.map((c) => c.replace(/^CAP_/, '').toUpperCase());
  const kept = dropped.includes('ALL') ? [] : RUNTIME_DEFAULT.filter((c) => !dropped.includes(c));
  return [...new Set([...kept, ...add.map((c) => c.replace(/^CAP_/, '').toUpperCase())])];
}

interface Container {
  where: string;
  image: string;
  uid: number;
  gid: number;
  bounding: string[];
}

function yamlDocs(text: string): unknown[] {
  return JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)'], { input: text, encoding: 'utf8' })) as unknown[];
}

/** Every service of the compose files, as `docker-compose config` resolves it. */
function composeContainers(): Container[] {
  const Service = z.object({ image: z.string().optional(), user: z.string().optional(), cap_drop: z.array(z.string()).optional(), cap_add: z.array(z.string()).optional() });
  const Compose = z.object({ services: z.record(z.string(), Service) });
  const env = { ...process.env, DOMAIN_NAME: 'fieldstream.example.org', ADMIN_EMAIL: 'ops@example.org', DMZ_BROKER_HOST: 'dmz.example.org', COMMAND_API_TOKEN: 'a'.repeat(64), BRIDGE_STATE_TOKEN: 'b'.repeat(32), GRAFANA_ADMIN_PASSWORD: 'c'.repeat(32), INFLUXDB_TOKEN: 't' };
  return ['docker-compose.dmz.yml', 'docker-compose.internal.yml'].flatMap((file) => {
    const out = execFileSync('docker-compose', ['-f', join(repoRoot, file), 'config'], { env, encoding: 'utf8', cwd: repoRoot });
    const { services } = Compose.parse(yamlDocs(out)[0]);
    return Object.entries(services).flatMap(([name, s]) => {
      if (!s.image) return [];
      const [uid, gid] = (s.user ?? '0:0').split(':').map(Number);
      return [{ where: `${file}: ${name}`, image: s.image, uid: uid ?? 0, gid: gid ?? uid ?? 0, bounding: boundingSet(s.cap_drop, s.cap_add) }];
    });
  });
}

/** Every container of the Kubernetes bases' workloads. */
function kubeContainers(): Container[] {
  const Caps = z.object({ drop: z.array(z.string()).optional(), add: z.array(z.string()).optional() });
  const Sc = z.object({ runAsUser: z.number().optional(), runAsGroup: z.number().optional(), capabilities: Caps.optional() });
  const Workload = z.object({
    kind: z.string(),
    metadata: z.object({ name: z.string() }),
    spec: z.object({ template: z.object({ spec: z.object({ securityContext: Sc.optional(), containers: z.array(z.object({ name: z.string(), image: z.string(), securityContext: Sc.optional() })) }) }) }),
  });
  return ['dmz', 'internal'].flatMap((tier) => {
    const dir = join(repoRoot, 'k8s', 'base', tier);
    const resources = z.object({ resources: z.array(z.string()) }).parse(yamlDocs(readFileSync(join(dir, 'kustomization.yaml'), 'utf8'))[0]).resources;
    return resources.flatMap((file) =>
      yamlDocs(readFileSync(join(dir, file), 'utf8'))
        .filter((d) => ['Deployment', 'StatefulSet'].includes(z.object({ kind: z.string() }).parse(d).kind))
        .map((d) => Workload.parse(d))
        .flatMap((w) => {
          const pod = w.spec.template.spec;
          return pod.containers.map((c) => {
            const sc = { ...pod.securityContext, ...c.securityContext };
            return { where: `k8s/base/${tier}/${file}: ${w.metadata.name}/${c.name}`, image: c.image, uid: sc.runAsUser ?? 0, gid: sc.runAsGroup ?? sc.runAsUser ?? 0, bounding: boundingSet(c.securityContext?.capabilities?.drop, c.securityContext?.capabilities?.add) };
          });
        }),
    );
  });
}

const isRoot = process.getuid?.() === 0;
const found = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const missing = ['setcap', 'setpriv', 'caddy', 'docker-compose'].filter((c) => !found(c));
const SKIP = !isRoot ? 'needs root (setcap, setpriv)' : missing.length ? `needs ${missing.join(', ')} (libcap2-bin, util-linux, caddy, docker-compose)` : false;

describe('containers whose program carries file capabilities keep those capabilities in their bounding set', { skip: SKIP }, () => {
  let work: { dir: string; cleanup(): void } | undefined;
  const programs = new Map<string, string>();

  before(() => {
    work = tempDir('filecaps');
    chmodSync(work.dir, 0o755);
    for (const f of FILE_CAPABILITIES) {
      const path = join(work.dir, f.program);
      copyFileSync(execFileSync('sh', ['-c', `command -v ${f.program}`], { encoding: 'utf8' }).trim(), path);
      chmodSync(path, 0o755);
      execFileSync('setcap', [f.caps, path]);
      programs.set(f.program, path);
    }
  });
  after(() => work?.cleanup());

  /** The program run as the container would run it: its user, its bounding set, no new privileges. */
  function exec(program: string, c: Pick<Container, 'uid' | 'gid' | 'bounding'>): { status: number | null; stderr: string } {
    const bounding = ['-all', ...c.bounding.map((x) => `+${x.toLowerCase()}`)].join(',');
    const r = spawnSync('setpriv', ['--reuid', String(c.uid), '--regid', String(c.gid), '--clear-groups', '--inh-caps=-all', `--bounding-set=${bounding}`, '--no-new-privs', program, 'version'], { encoding: 'utf8' });
    return { status: r.status, stderr: r.stderr };
  }

  it('the stand-in behaves as the image: with every capability dropped it cannot even be executed', () => {
    const r = exec(programs.get('caddy') ?? assert.fail('no caddy'), { uid: 1000, gid: 1000, bounding: [] });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /Operation not permitted/);
  });

  it('every such container of the compose files and the Kubernetes manifests starts its program', () => {
    const containers = [...composeContainers(), ...kubeContainers()];
    let checked = 0;
    for (const c of containers) {
      const f = FILE_CAPABILITIES.find((x) => x.image.test(c.image));
      if (!f) continue;
      checked++;
      const r = exec(programs.get(f.program) ?? assert.fail(f.program), c);
      assert.equal(r.status, 0, `${c.where} (${c.image}, bounding set [${c.bounding.join(' ')}]): ${r.stderr.trim()}`);
    }
    assert.equal(checked, 2, 'the compose file\'s Caddy and the Kubernetes one');
  });
});
