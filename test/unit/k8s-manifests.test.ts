/**
 * The Kubernetes manifests (k8s/, docs/kubernetes.md), rendered by the real `kubectl kustomize` of
 * this machine (KUBECTL, else `kubectl`; CI installs Debian's kubernetes-client 1.20, kustomize
 * v2.0.3) from a copy of k8s/ whose overlays get a certificate set made here, exactly as an operator
 * fills them. Every rendered object is checked against what the compose files run and what
 * docs/deployment.md's firewall table allows. Parsed with PyYAML (python3-yaml), as elsewhere.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { allowedPeers, composeMemoryBytes, containerEnv, containersOf, KubeObject, KubeService, memoryBytes, podSpecOf, PrometheusConfig, scrapeTargets, workloadLabels, type Container, type Peer } from '../helpers/k8s.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { loadGatewayConfig } from '../../dmz/gateway/config.ts';

const repoRoot = join(import.meta.dirname, '..', '..');
const kubectl = process.env.KUBECTL ?? 'kubectl';
const kubectlFound = !spawnSync(kubectl, ['version', '--client'], { stdio: 'ignore' }).error;
const SKIP = kubectlFound ? false : `no kubectl found (${kubectl}); set KUBECTL or install kubernetes-client`;

/**
 * The repository's files that k8s/base holds copies of (kustomize reads only inside a kustomization's
 * folder): configuration at the root or in folders both tiers share. Code, and the brokers' folders,
 * come through kustomizations in their own folders instead (the bases outside k8s/).
 */
const COPIES: ReadonlyArray<readonly [string, string]> = [
  ['Caddyfile', 'k8s/base/dmz/config/Caddyfile'],
  ['monitoring/prometheus/dmz-prometheus.yml', 'k8s/base/dmz/config/dmz-prometheus.yml'],
  ['monitoring/prometheus/prometheus.yml', 'k8s/base/internal/config/prometheus.yml'],
  ['monitoring/prometheus/dmz-federate.yml', 'k8s/base/internal/config/dmz-federate.yml'],
  ['monitoring/prometheus/render-prometheus.sh', 'k8s/base/internal/config/render-prometheus.sh'],
  ['monitoring/prometheus/alerts.yml', 'k8s/base/internal/config/alerts.yml'],
  ['monitoring/grafana/provisioning/datasources/fieldstream.yml', 'k8s/base/internal/config/grafana/datasources.yml'],
  ['monitoring/grafana/provisioning/dashboards/fieldstream.yml', 'k8s/base/internal/config/grafana/dashboards.yml'],
  ['monitoring/grafana/provisioning/alerting/fieldstream.yml', 'k8s/base/internal/config/grafana/alerting.yml'],
  // Every dashboard: compose mounts the whole folder, so each new one is copied too (and listed in
  // the base's grafana-dashboards).
  ...readdirSync(join(repoRoot, 'monitoring', 'grafana', 'dashboards'))
    .filter((f) => f.endsWith('.json'))
    .map((f) => [`monitoring/grafana/dashboards/${f}`, `k8s/base/internal/config/grafana/dashboards/${f}`] as const),
];

interface Tier {
  overlay: 'dmz' | 'internal';
  namespace: string;
  compose: string;
  /** Secrets the operator makes by hand (a folder of files, or only when a feature is on): mounted optional. */
  operatorSecrets: string[];
}
const TIERS: Tier[] = [
  { overlay: 'dmz', namespace: 'fieldstream-dmz', compose: 'docker-compose.dmz.yml', operatorSecrets: ['gateway-device-tokens'] },
  // postgres, grafana-postgres: the PostgreSQL passwords, only where the site uses PostgreSQL.
  { overlay: 'internal', namespace: 'fieldstream-internal', compose: 'docker-compose.internal.yml', operatorSecrets: ['device-keys', 'postgres', 'grafana-postgres', 'grafana-influxdb', 'console-device-tokens', 'command-api-tokens'] },
];

/** docs/configuration.md: each service's /metrics, /healthz and /readyz port. */
const METRICS_PORTS: Record<string, number> = { gateway: 9464, distributor: 9465, 'command-api': 9466, 'broker-exporter': 9468, console: 9469 };
/**
 * The services of one pod that go on answering their callers while cut from the internal broker:
 * the console shows every page with a notice saying since when (docs/console.md), the command API
 * takes a command and sends it once the broker is back. Their port for those callers.
 */
const SERVED_WHILE_CUT: Record<string, number> = { console: 8090, 'command-api': 8080 };

function toJson(yamlText: string): unknown {
  return JSON.parse(
    execFileSync('python3', ['-c', 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)'], { input: yamlText, encoding: 'utf8' }),
  );
}

/** The repository folders the bases reach out to (`bases: [../../../scripts, ...]`). */
function outsideBases(): string[] {
  const Kustomization = z.object({ bases: z.array(z.string()).default([]) });
  const folders = ['dmz', 'internal'].flatMap((tier) => {
    const dir = join(repoRoot, 'k8s', 'base', tier);
    const [k] = z.array(Kustomization).parse(toJson(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')));
    return (k?.bases ?? []).map((b) => relative(repoRoot, join(dir, b))).filter((f) => !f.startsWith('k8s'));
  });
  return [...new Set(folders)];
}

const ComposeFile = z.object({
  services: z.record(
    z.string(),
    z.object({
      image: z.string(),
      profiles: z.array(z.string()).optional(),
      environment: z.record(z.string(), z.unknown()).optional(),
      mem_limit: z.union([z.string(), z.number()]).optional(),
      memswap_limit: z.union([z.string(), z.number()]).optional(),
    }),
  ),
});
function composeServices(file: string): z.infer<typeof ComposeFile>['services'] {
  const [doc] = z.array(z.unknown()).parse(toJson(readFileSync(file, 'utf8')));
  return ComposeFile.parse(doc).services;
}

describe('Kubernetes manifests', () => {
  it('k8s/base holds byte-equal copies of the repository files it turns into ConfigMaps', () => {
    for (const [source, copy] of COPIES) {
      assert.ok(readFileSync(join(repoRoot, copy)).equals(readFileSync(join(repoRoot, source))), `${copy} differs from ${source}: cp ${source} ${copy}`);
    }
  });

  const rendered = new Map<string, KubeObject[]>();
  const renderedServices = new Map<string, KubeService[]>();
  let work: { dir: string; cleanup(): void } | undefined;
  let pki: { dir: string; cleanup(): void } | undefined;

  before(() => {
    if (SKIP) return;
    work = tempDir('k8s');
    pki = makeTestPki([], 'fieldstream.example.org');
    // The bases outside k8s/ (scripts/, the brokers' folders) keep their place relative to it.
    cpSync(join(repoRoot, 'k8s'), join(work.dir, 'k8s'), { recursive: true, filter: (src) => !/overlays\/[^/]+\/(certs|secrets)(\/|$)/.test(src) });
    for (const folder of outsideBases()) cpSync(join(repoRoot, folder), join(work.dir, folder), { recursive: true });
    for (const tier of TIERS) {
      // What docs/kubernetes.md tells the operator to copy.
      const certs = join(work.dir, 'k8s', 'overlays', tier.overlay, 'certs');
      mkdirSync(certs);
      for (const f of ['ca.crt', 'ca.crl', tier.overlay]) cpSync(join(pki.dir, f), join(certs, f), { recursive: true });
    }
    const internal = join(work.dir, 'k8s', 'overlays', 'internal');
    writeFileSync(join(internal, 'certs', 'internal', 'revoked-devices.txt'), '');
    mkdirSync(join(internal, 'secrets'));
    writeFileSync(join(internal, 'secrets', 'command-api-token'), 'a'.repeat(64));
    writeFileSync(join(internal, 'secrets', 'bridge-state-token'), 'c'.repeat(32));
    writeFileSync(join(internal, 'secrets', 'influxdb-token'), 'influx-token');
    writeFileSync(join(internal, 'secrets', 'influxdb-password'), '');
    writeFileSync(join(internal, 'secrets', 'grafana-admin-password'), 'b'.repeat(32));
    for (const tier of TIERS) {
      const out = execFileSync(kubectl, ['kustomize', join(work.dir, 'k8s', 'overlays', tier.overlay)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      const docs = z.array(z.unknown()).parse(toJson(out));
      rendered.set(tier.overlay, z.array(KubeObject).parse(docs));
      renderedServices.set(tier.overlay, z.array(KubeService).parse(docs.filter((d) => KubeObject.parse(d).kind === 'Service')));
    }
    // The DMZ overlay as a site with CADDY_TLS=acme makes it (docs/kubernetes.md): its base line switched.
    const acme = join(work.dir, 'k8s', 'overlays', 'dmz-acme-site');
    cpSync(join(work.dir, 'k8s', 'overlays', 'dmz'), acme, { recursive: true });
    const k = readFileSync(join(acme, 'kustomization.yaml'), 'utf8');
    assert.match(k, /^- \.\.\/\.\.\/base\/dmz$/m, 'the DMZ overlay names its base on a line of its own');
    writeFileSync(join(acme, 'kustomization.yaml'), k.replace(/^- \.\.\/\.\.\/base\/dmz$/m, '- ../../base/dmz-acme'));
    const out = execFileSync(kubectl, ['kustomize', acme], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    rendered.set('dmz-acme', z.array(KubeObject).parse(toJson(out)));
  });
  after(() => {
    work?.cleanup();
    pki?.cleanup();
  });

  for (const tier of TIERS) {
    describe(`overlays/${tier.overlay}`, { skip: SKIP }, () => {
      const objects = (): KubeObject[] => rendered.get(tier.overlay) ?? assert.fail('not rendered');
      const workloads = (): KubeObject[] => objects().filter((o) => ['Deployment', 'StatefulSet'].includes(o.kind));
      const named = (kind: string, name: string): KubeObject =>
        objects().find((o) => o.kind === kind && o.metadata.name === name) ?? assert.fail(`no ${kind} ${name}`);

      it(`runs every service of ${tier.compose} (but an optional database), with its image, every environment variable and its memory limit`, () => {
        for (const [name, svc] of Object.entries(composeServices(join(repoRoot, tier.compose)))) {
          if (svc.profiles?.length) continue;
          const w = workloads().find((o) => o.metadata.name === name) ?? assert.fail(`no workload for compose service ${name}`);
          const c = containersOf(w)[0] ?? assert.fail(name);
          assert.equal(c.image, svc.image, name);
          const env = new Set(c.env?.map((e) => e.name));
          for (const key of Object.keys(svc.environment ?? {})) assert.ok(env.has(key), `${name}: ${key} of compose is not set`);
          // One process in both: what the pod is killed past, the container is too (and each of
          // compose's --scale replicas, as each pod).
          const limit = memoryBytes(c.resources?.limits?.memory, `${name} limit`);
          assert.equal(composeMemoryBytes(svc.mem_limit, name), limit, `${name}: mem_limit ${String(svc.mem_limit)} of ${tier.compose}, Kubernetes ${String(c.resources?.limits?.memory)}`);
          // Memory and swap together (memswap_limit) no more than memory: no swap, as a pod has none.
          assert.equal(composeMemoryBytes(svc.memswap_limit, name), limit, `${name}: memswap_limit ${String(svc.memswap_limit)} of ${tier.compose}`);
          // docs/kubernetes.md's table of the limits
          const row = new RegExp(`^\\| ${name} \\| (\\S+) \\|$`, 'm').exec(readFileSync(join(repoRoot, 'docs', 'kubernetes.md'), 'utf8'));
          assert.equal(row?.[1], c.resources?.limits?.memory, `${name}: docs/kubernetes.md's table of memory limits`);
        }
      });

      it('puts everything in its own namespace', () => {
        assert.ok(objects().some((o) => o.kind === 'Namespace' && o.metadata.name === tier.namespace));
        for (const o of objects()) if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, tier.namespace, `${o.kind} ${o.metadata.name}`);
      });

      it('gives every container requests and limits, a pinned image, no service account token', () => {
        for (const w of workloads()) {
          assert.equal(podSpecOf(w).automountServiceAccountToken, false, w.metadata.name);
          for (const c of containersOf(w)) {
            for (const k of ['requests', 'limits'] as const) {
              assert.ok(c.resources?.[k]?.cpu && c.resources[k]?.memory, `${w.metadata.name}/${c.name}: ${k}`);
            }
            assert.match(c.image, /^[^:@]+(:[\w.-]+|@sha256:[0-9a-f]{64})$/, `${c.name}: a tag`);
            assert.doesNotMatch(c.image, /:latest$/, c.name);
          }
        }
      });

      it('runs every container as a non-root user, read-only, without privileges or capabilities', () => {
        for (const w of workloads()) {
          const pod = podSpecOf(w);
          for (const c of containersOf(w)) {
            const sc = { ...pod.securityContext, ...c.securityContext };
            const where = `${w.metadata.name}/${c.name}`;
            assert.equal(sc.runAsNonRoot, true, where);
            assert.ok((sc.runAsUser ?? 0) > 0, `${where}: runAsUser`);
            assert.equal(c.securityContext?.readOnlyRootFilesystem, true, where);
            assert.equal(c.securityContext?.allowPrivilegeEscalation, false, where);
            assert.ok(c.securityContext?.capabilities?.drop?.includes('ALL'), `${where}: drop ALL`);
            // Only what the restricted Pod Security Standard lets a pod add, and only where the
            // image's program carries it as a file capability (test/unit/file-capabilities.test.ts).
            for (const cap of c.securityContext?.capabilities?.add ?? []) {
              assert.ok(cap === 'NET_BIND_SERVICE' && c.image.startsWith('caddy:'), `${where}: adds ${cap}`);
            }
            assert.notEqual(c.securityContext?.privileged, true, where);
          }
        }
      });

      it('probes liveness on /healthz and readiness on /readyz of each service\'s metrics port; the brokers on their listener', () => {
        for (const w of workloads()) {
          for (const c of containersOf(w)) {
            const where = `${w.metadata.name}/${c.name}`;
            assert.ok(c.livenessProbe && c.readinessProbe, `${where}: probes`);
            const port = METRICS_PORTS[w.metadata.name];
            const served = SERVED_WHILE_CUT[w.metadata.name];
            if (port !== undefined) {
              assert.ok(c.env?.some((e) => /_METRICS_PORT$/.test(e.name) && e.value === String(port)), `${where}: metrics on ${port}`);
              assert.deepEqual([c.livenessProbe.httpGet?.path, c.livenessProbe.httpGet?.port], ['/healthz', port], where);
              if (served === undefined) assert.deepEqual([c.readinessProbe.httpGet?.path, c.readinessProbe.httpGet?.port], ['/readyz', port], where);
              else {
                // /readyz says whether it reaches the broker; failing it would take the one pod out
                // of the Service its callers come through, and they would get no answer at all
                // instead of its own (the console's notice, the command API's queued command).
                assert.deepEqual([c.readinessProbe.tcpSocket?.port, c.readinessProbe.httpGet], [served, undefined], `${where}: ready while its port ${served} takes connections, broker or not`);
                const svc = (renderedServices.get(tier.overlay) ?? []).find((x) => x.metadata.name === w.metadata.name) ?? assert.fail(`${where}: no Service ${w.metadata.name}`);
                assert.ok(svc.spec.ports.some((p) => p.targetPort === served), `${where}: the Service ${svc.metadata.name} carries ${served}`);
              }
            } else if (c.image.startsWith('eclipse-mosquitto:')) {
              assert.equal(c.livenessProbe.tcpSocket?.port, 8883, where);
              assert.equal(c.readinessProbe.tcpSocket?.port, 8883, where);
              // It listens only once its persistence file is read back (up to 2 GiB of queues): the
              // liveness probe (about 50 s) must not kill it before, at every start, for good.
              const startup = c.startupProbe;
              assert.equal(startup?.tcpSocket?.port, 8883, `${where}: a startup probe on its listener`);
              assert.ok((startup?.periodSeconds ?? 10) * (startup?.failureThreshold ?? 3) >= 600, `${where}: at least 10 minutes to start`);
            }
          }
        }
        assert.equal(workloads().filter((w) => METRICS_PORTS[w.metadata.name] !== undefined).length, tier.overlay === 'dmz' ? 1 : 4);
      });

      it('reads keys and tokens from Secrets: mounted read-only (0440 or 0400, group fsGroup), or by reference; writes only to emptyDir or PVC', () => {
        const secrets = new Set(objects().filter((o) => o.kind === 'Secret').map((o) => o.metadata.name));
        const configMaps = new Set(objects().filter((o) => o.kind === 'ConfigMap').map((o) => o.metadata.name));
        const refSecret = (name: string, optional: boolean | undefined, where: string): void => {
          if (tier.operatorSecrets.includes(name)) assert.equal(optional, true, `${where}: ${name} is made by the operator, so optional`);
          else assert.ok(secrets.has(name), `${where}: Secret ${name} is rendered`);
        };
        for (const w of workloads()) {
          const pod = podSpecOf(w);
          const claims = new Set((w.spec.volumeClaimTemplates ?? []).map((t) => t.metadata.name));
          const volumes = new Map(pod.volumes?.map((v) => [v.name, v]));
          for (const c of containersOf(w)) {
            const where = `${w.metadata.name}/${c.name}`;
            for (const e of c.env ?? []) {
              if (/(TOKEN|PASSWORD|SECRET)$/.test(e.name)) assert.ok(e.value === undefined && e.valueFrom?.secretKeyRef, `${where}: ${e.name} from a Secret`);
              if (e.valueFrom?.secretKeyRef) refSecret(e.valueFrom.secretKeyRef.name, e.valueFrom.secretKeyRef.optional, where);
              if (e.valueFrom?.configMapKeyRef) assert.ok(configMaps.has(e.valueFrom.configMapKeyRef.name), `${where}: ${e.name}`);
              // Every key file named in the environment is inside a Secret mount.
              if (/_KEY_FILE$/.test(e.name)) {
                const m = c.volumeMounts?.find((vm) => e.value?.startsWith(`${vm.mountPath}/`));
                const v = m && volumes.get(m.name);
                assert.ok(v?.secret || v?.projected, `${where}: ${e.name}=${e.value} is not on a Secret`);
              }
            }
            for (const m of c.volumeMounts ?? []) {
              const v = volumes.get(m.name);
              if (v?.secret || v?.projected) {
                assert.equal(m.readOnly, true, `${where}: ${m.name} read-only`);
                const mode = v.secret?.defaultMode ?? v.projected?.defaultMode;
                assert.ok(mode === 0o440 || mode === 0o400, `${where}: ${m.name} mode ${mode}`);
                assert.ok(pod.securityContext?.fsGroup, `${where}: fsGroup, so the non-root user reads the key`);
                if (v.secret) refSecret(v.secret.secretName, v.secret.optional, where);
                for (const s of v.projected?.sources ?? []) if (s.secret) refSecret(s.secret.name, s.secret.optional, where);
              } else if (v?.configMap) {
                assert.equal(m.readOnly, true, `${where}: ${m.name} read-only`);
                assert.ok(configMaps.has(v.configMap.name), `${where}: ConfigMap ${v.configMap.name}`);
              } else if (!m.readOnly) {
                assert.ok(v?.emptyDir || v?.persistentVolumeClaim || claims.has(m.name), `${where}: writable ${m.mountPath} is an emptyDir or a PVC`);
              }
            }
          }
        }
        // Nothing secret sits in a ConfigMap.
        for (const o of objects().filter((x) => x.kind === 'ConfigMap')) {
          for (const v of Object.values(o.data ?? {})) assert.doesNotMatch(v, /BEGIN [A-Z ]*PRIVATE KEY/, o.metadata.name);
        }
      });

      it('keeps what a service writes to its stores on a PersistentVolumeClaim, never an emptyDir a restart empties', () => {
        // The settings naming a service's own data (docs/configuration.md). TIMESERIES_LOCAL_PATH is
        // where the distributor, and the console (device_state, anomalies: docs/console.md), write
        // whenever INFLUXDB_URL is empty, PostgreSQL or not (distributor/sinks/select.ts).
        const STORES = ['TIMESERIES_LOCAL_PATH', 'DEAD_LETTER_PATH', 'FILE_STORAGE_PATH', 'DISTRIBUTOR_STATE_DIR', 'COMMAND_STATE_PATH', 'CONSOLE_STATE_DIR'];
        let seen = 0;
        for (const w of workloads()) {
          const claims = new Set((w.spec.volumeClaimTemplates ?? []).map((t) => t.metadata.name));
          const volumes = new Map(podSpecOf(w).volumes?.map((v) => [v.name, v]));
          for (const c of containersOf(w)) {
            const env = containerEnv(objects(), c);
            for (const key of STORES) {
              const path = env[key];
              if (!path) continue;
              seen++;
              const where = `${w.metadata.name}/${c.name}: ${key}=${path}`;
              const mount = (c.volumeMounts ?? []).filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`)).sort((a, b) => b.mountPath.length - a.mountPath.length)[0] ?? assert.fail(`${where}: on no volume`);
              assert.ok(!mount.readOnly, `${where}: writable`);
              assert.ok(claims.has(mount.name) || volumes.get(mount.name)?.persistentVolumeClaim, `${where}: on ${mount.name}, not a PersistentVolumeClaim`);
            }
          }
        }
        assert.equal(seen > 0, tier.overlay === 'internal');
      });

      it("keeps on a PersistentVolumeClaim each folder compose keeps in the host's data/, and one pod at a time writes it", () => {
        // A folder compose keeps across `docker-compose up` is state someone relies on: on an emptyDir
        // a pod deleted (a drain, an upgrade) comes back without it. Grafana's holds the contact
        // points and notification policies the operator adds (docs/monitoring.md: none is
        // provisioned), and its silences: on an emptyDir the per-device alerts went nowhere after
        // every new pod. Left out, each for its reason (docs/kubernetes.md's table):
        const NOT_KEPT: Record<string, string> = {
          'caddy:/config': "Caddy's copy of its own configuration, made again from the Caddyfile at each start",
          'caddy:/run/fieldstream': 'the socket of EDGE_HOP=unix; Kubernetes runs the mtls hop',
          'gateway:/run/fieldstream': 'the socket of EDGE_HOP=unix; Kubernetes runs the mtls hop',
          'dmz-prometheus:/prometheus': 'two days of gateway series the internal Prometheus has pulled already',
        };
        const Services = z.object({ services: z.record(z.string(), z.object({ profiles: z.array(z.string()).optional(), volumes: z.array(z.string()).optional() })) });
        const [doc] = z.array(z.unknown()).parse(toJson(readFileSync(join(repoRoot, tier.compose), 'utf8')));
        let seen = 0;
        for (const [name, svc] of Object.entries(Services.parse(doc).services)) {
          if (svc.profiles?.length) continue;
          for (const v of svc.volumes ?? []) {
            const [source = '', path = '', mode] = v.split(':');
            if (!source.startsWith('./data/') || mode === 'ro' || NOT_KEPT[`${name}:${path}`]) continue;
            seen++;
            const w = workloads().find((o) => o.metadata.name === name) ?? assert.fail(`no workload ${name}`);
            const claims = new Set((w.spec.volumeClaimTemplates ?? []).map((t) => t.metadata.name));
            const volumes = new Map(podSpecOf(w).volumes?.map((x) => [x.name, x]));
            const c = containersOf(w)[0] ?? assert.fail(name);
            const where = `${name}: ${path} (compose: ${source})`;
            const mount = (c.volumeMounts ?? []).filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`)).sort((a, b) => b.mountPath.length - a.mountPath.length)[0] ?? assert.fail(`${where}: on no volume`);
            assert.ok(!mount.readOnly, `${where}: writable`);
            const claim = volumes.get(mount.name)?.persistentVolumeClaim;
            assert.ok(claims.has(mount.name) || claim, `${where}: on ${mount.name}, not a PersistentVolumeClaim: a new pod starts without it`);
            // A claim of the Deployment's own (ReadWriteOnce) is one pod's: a rolling update's second
            // pod would wait for the volume on another node, or write the same files beside the first.
            if (claim && w.kind === 'Deployment') assert.equal(w.spec.strategy?.type, 'Recreate', `${name}: PVC ${claim.claimName} is replaced by Recreate, one pod at a time`);
          }
        }
        assert.ok(seen > 0, `${tier.compose} keeps folders in data/`);
      });

      it('runs the brokers as StatefulSets with their store on a PVC, the repository\'s configuration and renderer', () => {
        const broker = named('StatefulSet', `${tier.overlay}-mosquitto`);
        assert.ok(broker.spec.volumeClaimTemplates?.some((t) => t.metadata.name === 'data'));
        assert.ok(containersOf(broker)[0]?.volumeMounts?.some((m) => m.name === 'data' && m.mountPath === '/mosquitto/data'));
        const conf = objects().find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith(`${tier.overlay}-mosquitto-config`));
        const confDir = tier.overlay === 'dmz' ? 'dmz/mosquitto' : 'internal-network/mosquitto';
        const files = readdirSync(join(repoRoot, confDir)).filter((f) => f !== 'kustomization.yaml');
        assert.deepEqual(Object.keys(conf?.data ?? {}).sort(), files.sort(), `every file of ${confDir}`);
        for (const f of files) assert.equal(conf?.data?.[f], readFileSync(join(repoRoot, confDir, f), 'utf8'), f);
        const renderer = objects().find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('render-config'));
        assert.equal(renderer?.data?.['render-config.sh'], readFileSync(join(repoRoot, 'scripts', 'render-config.sh'), 'utf8'));
      });

      it("the broker's memory limit holds the queue its mosquitto.conf lets one client have, so that Mosquitto's bound, not the OOM killer, ends an outage's queue", () => {
        // Killed at the limit, the broker loses what it accepted since its last autosave, and the
        // store it reloads at start is as large as the queue that killed it: it is killed again.
        const broker = named('StatefulSet', `${tier.overlay}-mosquitto`);
        const c = containersOf(broker)[0] ?? assert.fail('broker');
        const cm = objects().find((o) => o.kind === 'ConfigMap' && new RegExp(`^${tier.overlay}-mosquitto-config(-[a-z0-9]+)?$`).test(o.metadata.name)) ?? assert.fail('no broker ConfigMap');
        const conf = cm.data?.['mosquitto.conf'] ?? assert.fail('no mosquitto.conf');
        const setting = (name: string): number => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(conf)?.[1] ?? assert.fail(`mosquitto.conf sets no ${name}`));
        // Besides its payload, each queued message costs Mosquitto about 400 bytes (its store entry, the
        // client's queue entry, its topic: 100,000 messages of 100 bytes grew a 2.0 broker by 49 MB).
        const queue = setting('max_queued_bytes') + setting('max_queued_messages') * 512;
        const request = memoryBytes(c.resources?.requests?.memory, 'broker request');
        const limit = memoryBytes(c.resources?.limits?.memory, 'broker limit');
        const MiB = 2 ** 20;
        assert.ok(limit >= queue + request, `${broker.metadata.name}: memory limit ${Math.round(limit / MiB)} MiB < ${Math.round((queue + request) / MiB)} MiB of one client's queue with its request`);
      });

      it('Prometheus finds each service it scrapes through a headless Service that lists pods failing readiness too; the Services for traffic list ready pods only', () => {
        // A pod failing its readiness probe (database down, broker lost) leaves a Service's DNS
        // unless publishNotReadyAddresses: scraped through such a name, it vanishes from Prometheus,
        // and the alerts about it (database writes failing, broker connection lost, target down) never fire.
        const [cmName, file] = tier.overlay === 'dmz' ? ['dmz-prometheus-config', 'dmz-prometheus.yml'] : ['prometheus-config', 'prometheus.yml'];
        const cm = objects().find((o) => o.kind === 'ConfigMap' && new RegExp(`^${cmName}(-[a-z0-9]+)?$`).test(o.metadata.name)) ?? assert.fail(`no ConfigMap ${cmName}`);
        const [config] = z.array(PrometheusConfig).parse(toJson(cm.data?.[file] ?? assert.fail(`${cmName} has no ${file}`)));
        const services = renderedServices.get(tier.overlay) ?? assert.fail('not rendered');
        const hpaTargets = new Set(objects().filter((o) => o.kind === 'HorizontalPodAutoscaler').map((h) => h.spec.scaleTargetRef?.name));
        const scrapedBy = new Set<string>();
        const reached = new Set<string>();
        for (const t of scrapeTargets(config ?? assert.fail(file))) {
          // Itself, and the DMZ Prometheus outside this cluster (a setting: tested above).
          if (t.host === 'localhost' || t.host.includes('${')) continue;
          const where = `${file}, job ${t.job}: ${t.host}:${t.port}`;
          const svc = services.find((x) => x.metadata.name === t.host) ?? assert.fail(`${where}: no Service of that name`);
          assert.ok(svc.spec.ports.some((p) => p.port === t.port), `${where}: the Service has that port`);
          const selected = workloads().filter((w) => Object.entries(svc.spec.selector ?? {}).every(([k, v]) => workloadLabels(w)[k] === v));
          assert.equal(selected.length, 1, `${where}: selects one workload`);
          const w = selected[0] as KubeObject;
          assert.equal(METRICS_PORTS[w.metadata.name], t.port, `${where}: ${w.metadata.name}'s metrics port`);
          if (containersOf(w).some((c) => c.readinessProbe)) {
            assert.equal(svc.spec.clusterIP, 'None', `${where}: headless, every pod's own address`);
            assert.equal(svc.spec.publishNotReadyAddresses, true, `${where}: lists ${w.metadata.name}'s pods that fail readiness too (publishNotReadyAddresses), or their alerts never fire`);
          }
          // A static target reaches one pod: only a workload that never runs more than one.
          if (!t.all) assert.ok(w.spec.replicas === 1 && !hpaTargets.has(w.metadata.name), `${where}: ${w.metadata.name} may run several pods; discover them by DNS`);
          scrapedBy.add(svc.metadata.name);
          reached.add(w.metadata.name);
        }
        assert.deepEqual([...reached].sort(), workloads().map((w) => w.metadata.name).filter((n) => METRICS_PORTS[n] !== undefined).sort(), 'every service with /metrics is scraped');
        // The console's pipeline page reads the same /readyz and /metrics: a service that is not
        // ready is what it must show, not lose.
        if (tier.overlay === 'internal') {
          const pipeline = containersOf(named('Deployment', 'console'))[0]?.env?.find((e) => e.name === 'CONSOLE_PIPELINE_TARGETS')?.value ?? assert.fail('CONSOLE_PIPELINE_TARGETS');
          for (const entry of pipeline.split(',')) {
            const host = new URL(entry.slice(entry.indexOf('=') + 1)).hostname;
            assert.ok(scrapedBy.has(host), `CONSOLE_PIPELINE_TARGETS: ${entry} goes through a Service Prometheus scrapes by, which lists pods that are not ready`);
          }
        }
        for (const svc of services.filter((x) => !scrapedBy.has(x.metadata.name))) {
          assert.notEqual(svc.spec.publishNotReadyAddresses, true, `${svc.metadata.name} carries traffic: to ready pods only`);
        }
        if (tier.overlay === 'dmz') assert.ok(services.some((x) => x.metadata.name === 'gateway' && x.spec.clusterIP === 'None'), "Caddy's gateway Service stays");
      });

      it('leaves the count of a workload an autoscaler scales to the autoscaler: no replicas of its own', () => {
        // `kubectl apply -k` would set spec.replicas back at every apply, undoing what the HPA scaled to.
        for (const hpa of objects().filter((o) => o.kind === 'HorizontalPodAutoscaler')) {
          const ref = hpa.spec.scaleTargetRef ?? assert.fail(`${hpa.metadata.name}: no scaleTargetRef`);
          const w = named(ref.kind, ref.name);
          assert.equal(w.spec.replicas, undefined, `${ref.kind} ${ref.name} is scaled by HorizontalPodAutoscaler ${hpa.metadata.name}: it must not set replicas`);
          assert.ok((hpa.spec.minReplicas ?? 0) >= 1, `${hpa.metadata.name}: minReplicas`);
        }
      });

      it('keeps a workload that may run several pods from losing them all to one node drain, and lets a drain through a workload of one', () => {
        // docs/kubernetes.md, "Scaling": the gateways (their HPA) and the distributors (the
        // StatefulSet's replicas) run several pods; without a PodDisruptionBudget a drain evicts them all at once.
        const scaled = tier.overlay === 'dmz' ? ['gateway'] : ['distributor'];
        const budgets = objects().filter((o) => o.kind === 'PodDisruptionBudget');
        const hpaMin = new Map(objects().filter((o) => o.kind === 'HorizontalPodAutoscaler').map((h) => [h.spec.scaleTargetRef?.name, h.spec.minReplicas ?? 1]));
        const budgetOf = (w: KubeObject): KubeObject | undefined =>
          budgets.find((b) => Object.keys(b.spec.selector?.matchLabels ?? {}).length > 0 && Object.entries(b.spec.selector?.matchLabels ?? {}).every(([k, v]) => workloadLabels(w)[k] === v));
        for (const name of scaled) {
          const w = workloads().find((o) => o.metadata.name === name) ?? assert.fail(`no workload ${name}`);
          assert.ok(budgetOf(w), `${w.kind} ${name} may run several pods: a PodDisruptionBudget selects them`);
        }
        for (const b of budgets) {
          const w = workloads().find((o) => budgetOf(o) === b) ?? assert.fail(`PodDisruptionBudget ${b.metadata.name} selects no workload`);
          const fewest = hpaMin.get(w.metadata.name) ?? w.spec.replicas ?? 1;
          // A budget no eviction can meet blocks every drain of the node: one pod at a time must be let go.
          if (b.spec.maxUnavailable !== undefined) assert.equal(b.spec.maxUnavailable, 1, `${b.metadata.name}: one pod at a time`);
          else assert.ok(Number(b.spec.minAvailable) < fewest, `${b.metadata.name}: minAvailable ${String(b.spec.minAvailable)} of ${fewest} pods blocks every drain`);
        }
      });

      it('denies by default, in and out, and lets DNS through', () => {
        const policies = objects().filter((o) => o.kind === 'NetworkPolicy');
        const deny = policies.find((p) => Object.keys(p.spec.podSelector ?? {}).length === 0 && !p.spec.ingress && !p.spec.egress);
        assert.deepEqual(deny?.spec.policyTypes?.slice().sort(), ['Egress', 'Ingress'], 'a default-deny policy');
        for (const w of workloads()) {
          const peers = allowedPeers(policies, workloadLabels(w), 'egress', 53, 'UDP');
          assert.ok(peers.length > 0 && !peers.includes('any'), `${w.metadata.name}: DNS only to the cluster DNS`);
        }
      });

      if (tier.overlay === 'dmz') {
        it('a gateway Deployment of two or more replicas, scaled on CPU, kept up through disruptions, behind a headless Service Caddy names', () => {
          const gw = named('Deployment', 'gateway');
          const hpa = named('HorizontalPodAutoscaler', 'gateway');
          assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: 'gateway' });
          assert.ok((hpa.spec.minReplicas ?? 0) >= 2 && (hpa.spec.maxReplicas ?? 0) > (hpa.spec.minReplicas ?? 0));
          assert.ok(hpa.spec.metrics?.some((m) => m.resource?.name === 'cpu'));
          const pdb = named('PodDisruptionBudget', 'gateway');
          assert.deepEqual(pdb.spec.selector?.matchLabels, gw.spec.selector?.matchLabels);
          const svc = named('Service', 'gateway');
          assert.equal(svc.spec.clusterIP, 'None', 'every replica in DNS, as compose\'s service name');
          const caddy = containersOf(named('Deployment', 'caddy'))[0];
          assert.equal(caddy?.env?.find((e) => e.name === 'GATEWAY_UPSTREAMS')?.value, 'gateway:8443');
          const caddyfile = objects().find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('caddyfile'));
          assert.equal(caddyfile?.data?.Caddyfile, readFileSync(join(repoRoot, 'Caddyfile'), 'utf8'));
        });

        it('lets Caddy out of the cluster (443, the ACME directory) only when CADDY_TLS=acme, which the base dmz-acme sets together with that egress', () => {
          const out = (objs: KubeObject[]): { tls: string | undefined; leaves: Record<string, number[]> } => {
            const policies = objs.filter((o) => o.kind === 'NetworkPolicy');
            const ws = objs.filter((o) => ['Deployment', 'StatefulSet'].includes(o.kind));
            const caddy = containersOf(ws.find((w) => w.metadata.name === 'caddy') ?? assert.fail('no caddy'))[0] ?? assert.fail('caddy');
            const leaves: Record<string, number[]> = {};
            for (const w of ws) {
              const ports = [80, 443, 8883, 9091].filter((port) => allowedPeers(policies, workloadLabels(w), 'egress', port).some((p) => p === 'any' || p.startsWith('ipBlock:')));
              if (ports.length) leaves[w.metadata.name] = ports;
            }
            return { tls: containerEnv(objs, caddy).CADDY_TLS, leaves };
          };
          // The overlay as committed: certificates from files, nothing in the DMZ leaves the cluster.
          assert.deepEqual(out(objects()), { tls: 'files', leaves: {} });
          // The same site on the ACME base: Caddy, and only Caddy, to 443 outside.
          const acme = rendered.get('dmz-acme') ?? assert.fail('not rendered');
          assert.deepEqual(out(acme), { tls: 'acme', leaves: { caddy: [443] } });
          // Everything else is the same site.
          const names = (objs: KubeObject[]): string[] => objs.map((o) => `${o.kind}/${o.metadata.name.replace(/-[a-z0-9]{10}$/, '')}`).sort();
          assert.deepEqual(names(acme).filter((n) => !names(objects()).includes(n)), ['NetworkPolicy/caddy-acme']);
          assert.deepEqual(names(objects()).filter((n) => !names(acme).includes(n)), []);
        });

        it('lets the HTTP port (80, 8080 in the pod: the ACME HTTP challenge) in only when CADDY_TLS=acme', () => {
          const open = (objs: KubeObject[]): Peer[] => {
            const caddy = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'caddy') ?? assert.fail('no caddy');
            return allowedPeers(objs.filter((o) => o.kind === 'NetworkPolicy'), workloadLabels(caddy), 'ingress', 8080);
          };
          // Certificates from files: Caddy's HTTP listener only redirects, and no device uses it.
          assert.deepEqual(open(objects()), []);
          assert.deepEqual(open(rendered.get('dmz-acme') ?? assert.fail('not rendered')), ['any']);
          for (const objs of [objects(), rendered.get('dmz-acme') ?? []]) {
            const caddy = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'caddy') ?? assert.fail('no caddy');
            for (const port of [8443, 8444]) assert.deepEqual(allowedPeers(objs.filter((o) => o.kind === 'NetworkPolicy'), workloadLabels(caddy), 'ingress', port), ['any'], `${port} from anywhere`);
          }
        });

        it("the gateway's memory limit holds what its own bounds let it hold, so that they, not the kernel's OOM killer, refuse a flood", () => {
          const gw = containersOf(named('Deployment', 'gateway'))[0] ?? assert.fail('gateway');
          const c = loadGatewayConfig(containerEnv(objects(), gw));
          const MiB = 2 ** 20;
          // The broker backlog is held about twice (shared/limits.ts, gatewayBrokerBacklogMaxBytes);
          // each connection, a TLS one from Caddy (EDGE_HOP=mtls), about 50 KiB (docs/performance.md);
          // the process itself, its memory request.
          const bounded = 2 * c.GATEWAY_BROKER_BACKLOG_MAX_MIB * MiB + c.GATEWAY_UNFINISHED_FRAMES_MAX_MIB * MiB + c.GATEWAY_MAX_CONNECTIONS * 50 * 1024;
          const request = memoryBytes(gw.resources?.requests?.memory, 'gateway request');
          const limit = memoryBytes(gw.resources?.limits?.memory, 'gateway limit');
          assert.ok(limit >= bounded + request, `gateway: memory limit ${Math.round(limit / MiB)} MiB < ${Math.round((bounded + request) / MiB)} MiB its bounds allow with its request`);
        });

        it('the firewall table: 443 from anywhere to Caddy, gateways from Caddy only, 8883 and 9091 from the corporate egress only', () => {
          const policies = objects().filter((o) => o.kind === 'NetworkPolicy');
          const pods = (name: string): Record<string, string> => workloadLabels(workloads().find((w) => w.metadata.name === name) ?? assert.fail(name));
          assert.deepEqual(allowedPeers(policies, pods('caddy'), 'ingress', 8443), ['any']);
          assertPeers(allowedPeers(policies, pods('gateway'), 'ingress', 8443), ['pod:caddy']);
          assertPeers(allowedPeers(policies, pods('gateway'), 'ingress', 9464), ['pod:dmz-prometheus']);
          const mqtt = allowedPeers(policies, pods('dmz-mosquitto'), 'ingress', 8883);
          assert.ok(mqtt.includes('pod:gateway'));
          assertCorporateOnly(mqtt.filter((p) => p !== 'pod:gateway'), 'DMZ broker');
          assertCorporateOnly(allowedPeers(policies, pods('dmz-prometheus'), 'ingress', 9090), 'DMZ Prometheus');
          // Nothing in the DMZ dials the corporate network; the broker dials nothing at all.
          assert.deepEqual(allowedPeers(policies, pods('dmz-mosquitto'), 'egress', 8883), []);
          for (const svcName of ['dmz-mosquitto-public', 'dmz-prometheus-public']) {
            const svc = named('Service', svcName);
            assert.equal(svc.spec.externalTrafficPolicy, 'Local', `${svcName} keeps the source address the policies check`);
          }
        });
      } else {
        it("the distributor's memory limit holds DISTRIBUTOR_CONSUMERS of the largest messages in progress at once, so that a burst of them is not ended by the OOM killer", () => {
          const d = containersOf(named('StatefulSet', 'distributor'))[0] ?? assert.fail('distributor');
          const consumers = Number(containerEnv(objects(), d).DISTRIBUTOR_CONSUMERS);
          assert.ok(consumers >= 1, 'DISTRIBUTOR_CONSUMERS');
          const MiB = 2 ** 20;
          // bench/distributor-memory.ts, 32 consumers each handed a message of the broker's largest
          // packet: 2,611 MiB at most when each was kept whole as a dead letter, 1,958 MiB with signed
          // envelopes of 1,000 readings of 256 fields waiting for a slow database, 1,826 MiB with
          // invalid JSON of 5.6 million objects; killed by the OOM killer at a limit of 2 GiB. About
          // 80 MiB a consumer, a quarter more as margin; the process itself, its memory request.
          const request = memoryBytes(d.resources?.requests?.memory, 'distributor request');
          const limit = memoryBytes(d.resources?.limits?.memory, 'distributor limit');
          const needed = 1.25 * consumers * 80 * MiB + request;
          assert.ok(limit >= needed, `distributor: memory limit ${Math.round(limit / MiB)} MiB < ${Math.round(needed / MiB)} MiB of ${consumers} consumers' messages, with a margin and its request`);
        });

        it("the distributors' file storage is one volume every replica mounts, as compose's shared folder: a transfer's chunks reach any replica", () => {
          // Each chunk is receipted (its device deletes it) once it is in FILE_STORAGE_PATH/.partial/,
          // and the replica whose chunk completes the set joins them from there (file-store.ts). On a
          // claim of each replica's own, the chunks of one file are spread over several volumes and
          // no replica ever holds them all: the file is lost, every chunk of it acknowledged.
          const d = named('StatefulSet', 'distributor');
          const c = containersOf(d)[0] ?? assert.fail('distributor');
          const files = containerEnv(objects(), c).FILE_STORAGE_PATH ?? assert.fail('FILE_STORAGE_PATH');
          const mount = (c.volumeMounts ?? []).filter((m) => files === m.mountPath || files.startsWith(`${m.mountPath}/`)).sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
          assert.ok(mount && !mount.readOnly, `FILE_STORAGE_PATH=${files} is on a writable mount`);
          assert.ok(!(d.spec.volumeClaimTemplates ?? []).some((t) => t.metadata.name === mount.name), `FILE_STORAGE_PATH=${files} is on ${mount.name}, a claim of each replica's own`);
          const claim = podSpecOf(d).volumes?.find((v) => v.name === mount.name)?.persistentVolumeClaim?.claimName ?? assert.fail(`${mount.name}: a PersistentVolumeClaim`);
          assert.ok(objects().some((o) => o.kind === 'PersistentVolumeClaim' && o.metadata.name === claim), `the claim ${claim} is rendered`);
        });

        it('the firewall table: consoles and APIs from the operators only, out to the DMZ on 8883 and 9091 only, the database', () => {
          const policies = objects().filter((o) => o.kind === 'NetworkPolicy');
          const pods = (name: string): Record<string, string> => workloadLabels(workloads().find((w) => w.metadata.name === name) ?? assert.fail(name));
          for (const [name, port] of [['command-api', 8080], ['console', 8090], ['prometheus', 9090], ['grafana', 3000]] as const) {
            const peers = allowedPeers(policies, pods(name), 'ingress', port);
            assert.ok(peers.some((p) => p.startsWith('ipBlock:')), `${name}: from the operators' network`);
            for (const p of peers) assert.match(p, /^(ipBlock:(?!0\.0\.0\.0\/0).*|namespace:.+|pod:.+)$/, `${name}:${port} from ${p}`);
          }
          const outside = (p: Peer): boolean => p === 'any' || p.startsWith('ipBlock:');
          // Who may leave the cluster, and to which port: docs/kubernetes.md's firewall table, the rows
          // of the internal tier to the DMZ and the databases ("| internal | InfluxDB | distributor, ... | 8086 |").
          const table = readFileSync(join(repoRoot, 'docs', 'kubernetes.md'), 'utf8');
          const may: Record<number, string[]> = { 443: [] };
          for (const [port, to] of [[8883, 'the DMZ broker'], [9091, 'the DMZ Prometheus'], [8086, 'InfluxDB'], [5432, 'PostgreSQL']] as const) {
            const row = table.split('\n').find((l) => l.startsWith(`| internal | ${to}`) && l.trimEnd().endsWith(`| ${port} |`)) ?? assert.fail(`docs/kubernetes.md: no row "| internal | ${to} ... | ${port} |"`);
            const from = row.split('|')[3] ?? assert.fail(row);
            may[port] = from.replace(/\([^)]*\)/g, '').split(',').map((n) => n.trim().toLowerCase().replace(/ /g, '-'));
          }
          for (const w of workloads()) {
            const leaves = Object.keys(may).map(Number).filter((port) => allowedPeers(policies, workloadLabels(w), 'egress', port).some(outside));
            assert.deepEqual(leaves, Object.keys(may).map(Number).filter((port) => may[port]?.includes(w.metadata.name)), `${w.metadata.name}: the ports docs/kubernetes.md's firewall table lets it out to`);
            for (const port of Object.keys(may).map(Number)) {
              const out = allowedPeers(policies, workloadLabels(w), 'egress', port).filter(outside);
              if (may[port]?.includes(w.metadata.name)) assertCorporateOnly(out, `${w.metadata.name} → ${port}`);
              else assert.deepEqual(out, [], `${w.metadata.name} may not leave the cluster on ${port}`);
            }
          }
          assert.deepEqual(allowedPeers(policies, pods('internal-mosquitto'), 'ingress', 8883).filter(outside), [], 'nothing dials in');
        });

        it("the internal Prometheus pulls /federate from each DMZ Prometheus the overlay names (DMZ_PROMETHEUS_HOSTS, else DMZ_PROMETHEUS_HOST), their own Service addresses, and may go out to each", () => {
          // The DMZ tier publishes its broker and its Prometheus as two LoadBalancer Services, each
          // with an address of its own: the broker's name (DMZ_BROKER_HOST) does not reach the second.
          const prom = named('StatefulSet', 'prometheus');
          const c = containersOf(prom).find((x) => x.name === 'prometheus') ?? assert.fail('no prometheus container');
          const env = containerEnv(objects(), c);
          assert.equal(env.DMZ_PROMETHEUS_HOSTS, '', 'the overlay has the setting, empty for one DMZ server');
          const host = env.DMZ_PROMETHEUS_HOST ?? assert.fail('the Prometheus container has no DMZ_PROMETHEUS_HOST');
          assert.ok(host, 'the overlay sets DMZ_PROMETHEUS_HOST');
          assert.notEqual(host, env.DMZ_BROKER_HOST, "the overlay's example is another address than the broker's");
          // The container's own command, run here on its mounts: what it renders is what it scrapes.
          const Config = z.object({ scrape_configs: z.array(z.object({ job_name: z.string(), metrics_path: z.string().optional(), static_configs: z.array(z.object({ targets: z.array(z.string()) })).optional() })) });
          const federated = (settings: Record<string, string>): string[] => {
            const rendered = runPodCommand(objects(), prom, c, settings);
            const [config] = z.array(Config).parse(toJson(rendered['/tmp/prometheus.yml'] ?? assert.fail('nothing rendered')));
            const jobs = config?.scrape_configs.filter((j) => j.metrics_path === '/federate') ?? [];
            assert.deepEqual(jobs.map((j) => j.job_name), jobs.map((_, i) => (i === 0 ? 'dmz-federate' : `dmz-federate-${i + 1}`)));
            return jobs.flatMap((j) => j.static_configs?.flatMap((s) => s.targets) ?? []);
          };
          const targets = federated({});
          assert.deepEqual(targets, [`${host}:${env.DMZ_PROMETHEUS_PORT}`]);
          // site-access.yaml: out to each address, an ipBlock of its own, not the broker's.
          const policies = objects().filter((o) => o.kind === 'NetworkPolicy');
          const outside = (p: Peer): boolean => p === 'any' || p.startsWith('ipBlock:');
          for (const t of targets) {
            const [, addr, port] = /^(.+):(\d+)$/.exec(t) ?? assert.fail(t);
            const toPrometheus = allowedPeers(policies, workloadLabels(prom), 'egress', Number(port)).filter(outside);
            assertCorporateOnly(toPrometheus, `prometheus → ${port}`);
            if (/^[0-9.]+$/.test(addr as string)) assert.ok(toPrometheus.includes(`ipBlock:${addr}/32`), `the egress to ${t}: an ipBlock of that address`);
            const toBroker = allowedPeers(policies, workloadLabels(named('StatefulSet', 'internal-mosquitto')), 'egress', 8883).filter(outside);
            assert.deepEqual(toPrometheus.filter((p) => toBroker.includes(p)), [], 'the DMZ Prometheus and the DMZ broker are separate addresses');
          }
          // Several DMZ servers: one job each from DMZ_PROMETHEUS_HOSTS; never a guess from the brokers'
          // names (each DMZ Prometheus has its own address), and one DMZ Prometheus for several DMZ
          // brokers is refused rather than half the gateways left unwatched.
          const several = { DMZ_BROKER_HOSTS: 'dmz1.example.org:8883,dmz2.example.org:8883' };
          assert.deepEqual(federated({ ...several, DMZ_PROMETHEUS_HOSTS: '203.0.113.21:9091,203.0.113.31' }), ['203.0.113.21:9091', `203.0.113.31:${env.DMZ_PROMETHEUS_PORT}`]);
          for (const [settings, message] of [
            [several, /DMZ_BROKER_HOSTS lists 2 DMZ brokers but DMZ_PROMETHEUS_HOST names one/],
            [{ ...several, DMZ_PROMETHEUS_HOST: '' }, /set DMZ_PROMETHEUS_HOSTS/],
          ] as const) {
            const r = runPod(objects(), prom, c, settings);
            assert.equal(r.status, 78, r.stderr);
            assert.match(r.stderr, message);
            assert.equal(r.started, false, 'Prometheus does not start');
          }
        });
      }
    });
  }
});

function assertPeers(actual: Peer[], expected: Peer[]): void {
  assert.deepEqual([...new Set(actual)].sort(), [...expected].sort());
}

/** Peers that are fixed addresses: never "any", never 0.0.0.0/0. */
function assertCorporateOnly(peers: Peer[], what: string): void {
  assert.ok(peers.length > 0, `${what}: some address is allowed`);
  for (const p of peers) assert.match(p, /^ipBlock:(?!0\.0\.0\.0\/0)[0-9a-f.:]+\/\d+$/, `${what}: ${p}`);
}

/**
 * Runs a container's `sh -c` command on this machine as its pod would: each ConfigMap volume's files
 * and each emptyDir in folders of a temporary directory standing for their mount paths (the command's
 * paths rewritten to them), its environment from the rendered ConfigMaps, and a stub that notes its
 * arguments for the program it finally execs. Returns the files the command left in its emptyDirs,
 * by their path in the pod.
 */
function runPodCommand(objects: KubeObject[], w: KubeObject, c: Container, env: Record<string, string> = {}): Record<string, string> {
  const r = runPod(objects, w, c, env);
  assert.equal(r.status, 0, `${c.name}: ${r.stderr}`);
  assert.ok(r.started, `${c.name}: its program was started`);
  return r.files;
}

/** runPodCommand's run, with the settings given over the overlay's, whatever its outcome. */
function runPod(objects: KubeObject[], w: KubeObject, c: Container, env: Record<string, string>): { status: number | null; stderr: string; started: boolean; files: Record<string, string> } {
  const [sh, flag, script] = c.command ?? [];
  assert.deepEqual([sh, flag], ['/bin/sh', '-c'], `${c.name}: a shell command`);
  assert.ok(script, c.name);
  const tmp = tempDir('pod');
  try {
    const volumes = new Map(podSpecOf(w).volumes?.map((v) => [v.name, v]));
    const folders = new Map<string, string>();
    const scratch: string[] = [];
    for (const m of c.volumeMounts ?? []) {
      const dir = join(tmp.dir, 'fs', m.mountPath);
      mkdirSync(dir, { recursive: true });
      folders.set(m.mountPath, dir);
      const v = volumes.get(m.name);
      if (v?.configMap) {
        const name = v.configMap.name;
        const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === name) ?? assert.fail(`no ConfigMap ${name}`);
        for (const [file, text] of Object.entries(cm.data ?? {})) writeFileSync(join(dir, file), text, { mode: 0o755 });
      } else if (v?.emptyDir) scratch.push(m.mountPath);
    }
    const program = /\bexec (\S+)/.exec(script)?.[1] ?? assert.fail(`${c.name}: execs no program`);
    const bin = join(tmp.dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, program), '#!/bin/sh\necho "$@" > "$RAN_WITH"\n', { mode: 0o755 });
    const mounts = [...folders.keys()].sort((a, b) => b.length - a.length).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    const command = script.replace(new RegExp(`(?<![\\w/])(${mounts.join('|')})(?=/)`, 'g'), (p) => folders.get(p) ?? p);
    const ran = join(tmp.dir, 'ran');
    const r = spawnSync('/bin/sh', ['-c', command], { env: { ...containerEnv(objects, c), ...env, PATH: `${bin}:${process.env.PATH}`, RAN_WITH: ran }, encoding: 'utf8' });
    const files: Record<string, string> = {};
    for (const p of scratch) for (const f of readdirSync(folders.get(p) ?? p)) files[`${p}/${f}`] = readFileSync(join(folders.get(p) ?? p, f), 'utf8');
    return { status: r.status, stderr: r.stderr, started: existsSync(ran), files };
  } finally {
    tmp.cleanup();
  }
}
