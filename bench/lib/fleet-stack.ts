import type { AckMode } from '../../shared/contract/downlink.ts';
import { readFileSync } from 'node:fs';
import type { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { loadCa } from '../../pki/onboarding.ts';
import { fleet, type FleetEdge, type FleetResult } from '../scenarios/fleet.ts';
import { CpuMeter } from './proc-stats.ts';

/** file descriptors Caddy keeps besides its proxied connections (listeners, logs, upstream spares) */
const CADDY_OTHER_FDS = 200;

/**
 * DMZ servers the fleet needs: Caddy holds two file descriptors per proxied WebSocket (the device's
 * and the gateway's), and a process here may hold no more than the hard RLIMIT_NOFILE (20,000 on our
 * machine, not raisable without CAP_SYS_RESOURCE): 10,000 devices need two Caddys, each a DMZ
 * server of its own as docs/deployment.md "More than one DMZ server" deploys them.
 */
export function dmzServersFor(devices: number): number {
  const m = /^Max open files\s+\d+\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  const hard = m?.[1] === undefined || m[1] === 'unlimited' ? Infinity : Number(m[1]);
  return Math.max(1, Math.ceil(devices / Math.floor((hard - CADDY_OTHER_FDS) / 2)));
}

/** The stack's DMZ servers as the fleet's edges: each Caddy's WSS URL and the first gateway behind it. */
export function fleetEdges(stack: LocalStack): FleetEdge[] {
  return stack.dmzServers.map((s) => {
    const caddyPid = s.caddy.pid;
    const gatewayPid = s.gateways[0]?.pid;
    if (caddyPid === undefined || gatewayPid === undefined) throw new Error(`DMZ server ${s.id ?? 1}: Caddy or its gateway is not running`);
    return { url: s.urls.wss, caddyPid, gatewayPid };
  });
}

/** The CPU of each of the fleet's processes (each DMZ server's apart). */
export function fleetMeter(stack: LocalStack, influx: InfluxV1): CpuMeter {
  return new CpuMeter(() => ({
    ...Object.fromEntries(
      stack.dmzServers.flatMap((s, i) => [
        [`Caddy ${i + 1}`, s.caddy.pid],
        [`gateway ${i + 1}`, s.gateways[0]?.pid],
        [`DMZ Mosquitto ${i + 1}`, s.mosquitto.pid],
      ]),
    ),
    'internal Mosquitto (bridge)': stack.internalMosquitto.pid,
    distributor: stack.distributor.pid,
    console: stack.console.pid,
    InfluxDB: influx.process.pid,
  }));
}

/** The fleet on the stack's every DMZ server, `meter` taking the CPU of each process over the measured load. */
export function runFleet(
  stack: LocalStack,
  influx: InfluxV1,
  o: { certsDir: string; database: string; devices: number; seconds: number; warmUpSeconds: number; readingsPerFrame: number; acks: AckMode },
  meter: CpuMeter = fleetMeter(stack, influx),
): Promise<FleetResult> {
  return fleet({ edges: fleetEdges(stack), certsDir: o.certsDir, ca: loadCa(o.certsDir), influx, database: o.database, devices: o.devices, seconds: o.seconds, warmUpSeconds: o.warmUpSeconds, readingsPerFrame: o.readingsPerFrame, acks: o.acks, concurrency: 64, meter });
}
