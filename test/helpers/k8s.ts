/**
 * Rendered Kubernetes objects as the manifest test reads them (test/unit/k8s-manifests.test.ts):
 * the parts it checks, parsed with zod from kubectl's output, and what NetworkPolicies allow.
 */
import assert from 'node:assert/strict';
import { z } from 'zod';

const Labels = z.record(z.string(), z.string());
const LabelSelector = z.object({
  matchLabels: Labels.optional(),
  matchExpressions: z.array(z.object({ key: z.string(), operator: z.string(), values: z.array(z.string()).optional() })).optional(),
});
const Port = z.union([z.number(), z.string()]);
const Probe = z.object({
  httpGet: z.object({ path: z.string(), port: Port }).optional(),
  tcpSocket: z.object({ port: Port }).optional(),
  periodSeconds: z.number().optional(),
  failureThreshold: z.number().optional(),
});
const SecurityContext = z.object({
  runAsNonRoot: z.boolean().optional(),
  runAsUser: z.number().optional(),
  fsGroup: z.number().optional(),
  readOnlyRootFilesystem: z.boolean().optional(),
  allowPrivilegeEscalation: z.boolean().optional(),
  privileged: z.boolean().optional(),
  capabilities: z.object({ drop: z.array(z.string()).optional(), add: z.array(z.string()).optional() }).optional(),
});
const KeyRef = z.object({ name: z.string(), key: z.string(), optional: z.boolean().optional() });
const Quantities = z.record(z.string(), Port);
export const Container = z.object({
  name: z.string(),
  image: z.string(),
  command: z.array(z.string()).optional(),
  env: z.array(z.object({ name: z.string(), value: z.string().optional(), valueFrom: z.object({ secretKeyRef: KeyRef.optional(), configMapKeyRef: KeyRef.optional() }).optional() })).optional(),
  resources: z.object({ requests: Quantities.optional(), limits: Quantities.optional() }).optional(),
  livenessProbe: Probe.optional(),
  readinessProbe: Probe.optional(),
  startupProbe: Probe.optional(),
  securityContext: SecurityContext.optional(),
  volumeMounts: z.array(z.object({ name: z.string(), mountPath: z.string(), readOnly: z.boolean().optional() })).optional(),
});
export type Container = z.infer<typeof Container>;
const SecretSource = z.object({ name: z.string(), optional: z.boolean().optional() });
const Volume = z.object({
  name: z.string(),
  secret: z.object({ secretName: z.string(), defaultMode: z.number().optional(), optional: z.boolean().optional() }).optional(),
  projected: z.object({ defaultMode: z.number().optional(), sources: z.array(z.object({ secret: SecretSource.optional() })) }).optional(),
  configMap: z.object({ name: z.string() }).optional(),
  emptyDir: z.object({}).passthrough().optional(),
  persistentVolumeClaim: z.object({ claimName: z.string() }).optional(),
});
export const PodSpec = z.object({
  containers: z.array(Container),
  initContainers: z.array(Container).optional(),
  volumes: z.array(Volume).optional(),
  securityContext: SecurityContext.optional(),
  automountServiceAccountToken: z.boolean().optional(),
});
export type PodSpec = z.infer<typeof PodSpec>;
const PolicyPeer = z.object({
  podSelector: LabelSelector.optional(),
  namespaceSelector: LabelSelector.optional(),
  ipBlock: z.object({ cidr: z.string(), except: z.array(z.string()).optional() }).optional(),
});
const PolicyRule = z.object({
  from: z.array(PolicyPeer).optional(),
  to: z.array(PolicyPeer).optional(),
  ports: z.array(z.object({ protocol: z.string().optional(), port: Port.optional() })).optional(),
});
export const KubeObject = z.object({
  kind: z.string(),
  metadata: z.object({ name: z.string(), namespace: z.string().optional() }),
  data: z.record(z.string(), z.string()).optional(),
  spec: z
    .object({
      replicas: z.number().optional(),
      // a Deployment's: Recreate where its pod's PersistentVolumeClaim is one pod's
      strategy: z.object({ type: z.string() }).optional(),
      selector: LabelSelector.optional(),
      template: z.object({ metadata: z.object({ labels: Labels }), spec: PodSpec }).optional(),
      volumeClaimTemplates: z.array(z.object({ metadata: z.object({ name: z.string() }) })).optional(),
      scaleTargetRef: z.object({ apiVersion: z.string(), kind: z.string(), name: z.string() }).optional(),
      minReplicas: z.number().optional(),
      maxReplicas: z.number().optional(),
      // a PodDisruptionBudget's (a count or a percentage)
      minAvailable: z.union([z.number(), z.string()]).optional(),
      maxUnavailable: z.union([z.number(), z.string()]).optional(),
      metrics: z.array(z.object({ resource: z.object({ name: z.string() }).optional() })).optional(),
      clusterIP: z.string().optional(),
      externalTrafficPolicy: z.string().optional(),
      podSelector: LabelSelector.optional(),
      policyTypes: z.array(z.string()).optional(),
      ingress: z.array(PolicyRule).optional(),
      egress: z.array(PolicyRule).optional(),
    })
    .default({}),
});
export type KubeObject = z.infer<typeof KubeObject>;

/** A Service as DNS answers for it: headless or not, pods not ready listed or not, whom it selects. */
export const KubeService = z.object({
  kind: z.literal('Service'),
  metadata: z.object({ name: z.string() }),
  spec: z.object({
    clusterIP: z.string().optional(),
    publishNotReadyAddresses: z.boolean().optional(),
    selector: Labels.optional(),
    ports: z.array(z.object({ name: z.string().optional(), port: z.number(), targetPort: Port.optional() })).default([]),
  }),
});
export type KubeService = z.infer<typeof KubeService>;

/** The scrape jobs of a Prometheus configuration, and the names each finds its targets by. */
export const PrometheusConfig = z.object({
  scrape_configs: z.array(
    z.object({
      job_name: z.string(),
      metrics_path: z.string().optional(),
      static_configs: z.array(z.object({ targets: z.array(z.string()) })).optional(),
      dns_sd_configs: z.array(z.object({ names: z.array(z.string()), type: z.string().optional(), port: z.number().optional() })).optional(),
    }),
  ),
});
/** Each scrape target's host name and port: static ones, and names DNS discovery resolves to every address of (`all`). */
export function scrapeTargets(config: z.infer<typeof PrometheusConfig>): Array<{ job: string; host: string; port: number; all: boolean }> {
  return config.scrape_configs.flatMap((j) => [
    ...(j.static_configs ?? []).flatMap((s) =>
      s.targets.map((t) => {
        const m = /^(.+):([^:]+)$/.exec(t) ?? assert.fail(`${j.job_name}: ${t} has no port`);
        return { job: j.job_name, host: m[1] as string, port: Number(m[2]), all: false };
      }),
    ),
    ...(j.dns_sd_configs ?? []).flatMap((d) => d.names.map((host) => ({ job: j.job_name, host, port: d.port ?? assert.fail(`${j.job_name}: no port`), all: true }))),
  ]);
}

/**
 * A container's environment as its pod gets it: literal values, and ConfigMap keys looked up in the
 * rendered ConfigMaps (a Secret's key is left out: nothing here reads one).
 */
export function containerEnv(objects: KubeObject[], c: Container): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.configMapKeyRef;
    if (e.value !== undefined) out[e.name] = e.value;
    else if (ref) {
      const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === ref.name) ?? assert.fail(`${c.name}: no ConfigMap ${ref.name}`);
      out[e.name] = cm.data?.[ref.key] ?? assert.fail(`${c.name}: ${ref.name} has no ${ref.key}`);
    }
  }
  return out;
}

/** A memory quantity ("512Mi", "2Gi", "1G", bytes) in bytes. */
export function memoryBytes(q: string | number | undefined, where: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q ?? ''));
  if (!m) return assert.fail(`${where}: memory quantity ${String(q)}`);
  const unit: Record<string, number> = { '': 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * (unit[m[2] ?? ''] ?? 1);
}

/** A compose file's memory quantity (mem_limit: "768m", "2g", bytes; Docker's units are binary) in bytes. */
export function composeMemoryBytes(q: string | number | undefined, where: string): number {
  const m = /^(\d+)([bkmg])?$/i.exec(String(q ?? ''));
  if (!m) return assert.fail(`${where}: mem_limit ${String(q)}`);
  const unit: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 };
  return Number(m[1]) * (unit[(m[2] ?? '').toLowerCase()] ?? 1);
}

export const podSpecOf = (w: KubeObject): PodSpec => w.spec.template?.spec ?? assert.fail(`${w.metadata.name}: no pod template`);
export const containersOf = (w: KubeObject): Container[] => [...(podSpecOf(w).initContainers ?? []), ...podSpecOf(w).containers];
export const workloadLabels = (w: KubeObject): Record<string, string> => w.spec.template?.metadata.labels ?? {};

function selects(selector: z.infer<typeof LabelSelector>, labels: Record<string, string>): boolean {
  return (
    Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v) &&
    (selector.matchExpressions ?? []).every((e) => (e.operator === 'In' ? (e.values ?? []).includes(labels[e.key] ?? '') : assert.fail(`operator ${e.operator}`)))
  );
}

/** Who a policy peer is: "any", "ipBlock:CIDR", "namespace:{labels}[/pod:...]" or "pod:NAME" (one per name). */
export type Peer = string;
function describePeer(p: z.infer<typeof PolicyPeer>): Peer[] {
  if (p.ipBlock) return [`ipBlock:${p.ipBlock.cidr}`];
  const pods = p.podSelector
    ? [...Object.entries(p.podSelector.matchLabels ?? {}).map(([k, v]) => (k === 'app.kubernetes.io/name' ? v : `${k}=${v}`)), ...(p.podSelector.matchExpressions ?? []).flatMap((e) => e.values ?? [])]
    : [];
  if (p.namespaceSelector) return [`namespace:${JSON.stringify(p.namespaceSelector.matchLabels ?? {})}${pods.length ? `/pod:${pods.join(',')}` : ''}`];
  return pods.length ? pods.map((n) => `pod:${n}`) : ['pod:*'];
}

/** Every peer the policies let reach (ingress) or be reached by (egress) pods with these labels on this port. */
export function allowedPeers(policies: KubeObject[], labels: Record<string, string>, direction: 'ingress' | 'egress', port: number, protocol = 'TCP'): Peer[] {
  const out: Peer[] = [];
  for (const p of policies) {
    if (!selects(p.spec.podSelector ?? {}, labels)) continue;
    const types = p.spec.policyTypes ?? (p.spec.egress ? ['Ingress', 'Egress'] : ['Ingress']);
    if (!types.includes(direction === 'ingress' ? 'Ingress' : 'Egress')) continue;
    for (const rule of (direction === 'ingress' ? p.spec.ingress : p.spec.egress) ?? []) {
      if (rule.ports?.length && !rule.ports.some((r) => (r.protocol ?? 'TCP') === protocol && (r.port === undefined || r.port === port))) continue;
      const peers = direction === 'ingress' ? rule.from : rule.to;
      if (!peers?.length) out.push('any');
      else out.push(...peers.flatMap(describePeer));
    }
  }
  return out;
}
