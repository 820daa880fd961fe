import { parseArgs } from 'node:util';
import { DEVICE_PLACEMENTS, type DevicePlacement } from '../scenarios/sustained.ts';
import type { EdgeHop } from '../../scripts/local-stack/dmz-server.ts';
import { AckModeSchema } from '../../shared/contract/downlink.ts';

/**
 * seconds of the fleet's load before the measured ones (FleetOptions.warmUpSeconds): in a fleet of
 * 5,000 on one DMZ server the watched readings due in the first 10 s had a p99 of 2 s, those after
 * 150–430 ms per 10 s (2026-12-02); the quick run's is short, there to run the same code
 */
export const FLEET_WARM_UP_S = { full: 10, quick: 2 } as const;

/** A command line the benchmark cannot run: its message is printed and the benchmark exits with 2. */
export class UsageError extends Error {}

export type BenchOptions = ReturnType<typeof parseBenchOptions>;

/** `npm run bench`'s options (bench/pipeline.ts lists them), checked, with the loads they give. */
export function parseBenchOptions(args: string[]) {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: 'boolean', default: false },
      clients: { type: 'string' },
      readings: { type: 'string' },
      connections: { type: 'string' },
      /** the connections scenario alone (its count from --connections) */
      'connections-alone': { type: 'boolean', default: false },
      profile: { type: 'string' },
      /** KEY=VALUE: a service setting for this run (e.g. --set DISTRIBUTOR_CONSUMERS=8) */
      set: { type: 'string', multiple: true, default: [] },
      /** influxdb (the scenarios above) or postgres (InfluxDB and PostgreSQL compared) */
      sink: { type: 'string', default: 'influxdb' },
      fleet: { type: 'boolean', default: false },
      'fleet-devices': { type: 'string' },
      'fleet-seconds': { type: 'string' },
      'fleet-per-frame': { type: 'string' },
      /** all or none: whether the fleet's devices read acks (X-FieldStream-Acks, docs/message-contract.md) */
      'fleet-acks': { type: 'string', default: 'none' },
      long: { type: 'boolean', default: false },
      'long-minutes': { type: 'string', default: '10' },
      /** readings/s taken as the batched maximum instead of measuring it first */
      'long-rate': { type: 'string' },
      /** where the simulated devices stand: apart or shared (bench/scenarios/sustained.ts) */
      'long-devices': { type: 'string', default: 'shared' },
      /** KEY=VALUE: instead of the scenarios, batched and one-per-message rounds with and without this setting */
      compare: { type: 'string', multiple: true, default: [] },
    },
  });
  if (values.sink !== 'influxdb' && values.sink !== 'postgres') throw new UsageError(`--sink takes influxdb or postgres, not ${JSON.stringify(values.sink)}`);
  const longDevices: DevicePlacement | undefined = DEVICE_PLACEMENTS.find((d) => d === values['long-devices']);
  if (longDevices === undefined) throw new UsageError(`--long-devices takes ${DEVICE_PLACEMENTS.join(' or ')}, not ${JSON.stringify(values['long-devices'])}`);
  const badSetting = [...values.set, ...values.compare].find((kv) => !/^[A-Z][A-Z0-9_]*=/.test(kv));
  if (badSetting !== undefined) throw new UsageError(`--set and --compare take KEY=VALUE (a setting name in capitals), not ${JSON.stringify(badSetting)}`);
  const keyValues = (list: string[]) => Object.fromEntries(list.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const settings = keyValues(values.set);
  const compared = keyValues(values.compare);
  // EDGE_HOP shapes the stack (Caddy's upstreams, the gateways' listeners): --set only, and one gateway per DMZ server.
  const edgeHop: EdgeHop = settings.EDGE_HOP === 'unix' ? 'unix' : 'mtls';
  if ((settings.EDGE_HOP !== undefined && settings.EDGE_HOP !== edgeHop) || 'EDGE_HOP' in compared) {
    throw new UsageError('EDGE_HOP is set with --set EDGE_HOP=mtls or --set EDGE_HOP=unix (the stack is built for it; --compare cannot switch it)');
  }
  const quick = values.quick;
  /** readings per client, batched */
  const perClient = Number(values.readings ?? (quick ? 2_000 : 50_000));
  /** readings in each fleet device's frames: 1, each as it is taken (the fleet's targets are for that) */
  const readingsPerFrame = Number(values['fleet-per-frame'] ?? 1);
  if (!Number.isInteger(readingsPerFrame) || readingsPerFrame < 1 || readingsPerFrame > 60) {
    throw new UsageError(`--fleet-per-frame takes a whole number of readings from 1 to 60, not ${JSON.stringify(values['fleet-per-frame'])}`);
  }
  const acks = AckModeSchema.safeParse(values['fleet-acks']);
  if (!acks.success) throw new UsageError(`--fleet-acks takes all or none, not ${JSON.stringify(values['fleet-acks'])}`);
  return {
    values,
    settings,
    compared,
    edgeHop,
    longDevices,
    comparing: values.compare.length > 0,
    quick,
    clients: Number(values.clients ?? (quick ? 2 : 8)),
    perClient,
    /** readings per client, one per message */
    onePerMessage: quick ? 1_000 : perClient,
    connections: Number(values.connections ?? (quick ? 200 : 10_000)),
    /** seconds of steady load while latency is measured */
    latencySeconds: quick ? 4 : 20,
    files: quick ? 2 : 5,
    /**
     * the fleet: devices, each one reading per second, for `seconds` after `warmUpSeconds` of the
     * same load (FleetOptions.warmUpSeconds), `readingsPerFrame` to a frame
     */
    fleet: {
      devices: Number(values['fleet-devices'] ?? (quick ? 50 : 10_000)),
      seconds: Number(values['fleet-seconds'] ?? (quick ? 5 : 60)),
      warmUpSeconds: quick ? FLEET_WARM_UP_S.quick : FLEET_WARM_UP_S.full,
      readingsPerFrame,
      acks: acks.data,
    },
  };
}
