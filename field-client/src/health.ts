import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, statfs } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import type { DownlinkFrame } from '../../shared/contract/downlink.ts';
import { HealthPayloadSchema, type HealthPayload, type LocalValue } from '../../shared/contract/payloads.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { daysUntil } from '../../shared/tls-files.ts';
import type { FieldClient } from './field-client.ts';
import type { FileOutbox } from './files/file-outbox.ts';
import type { GatewayConnection } from './gateway-connection.ts';
import type { LocalValuesUpdate } from './inputs/validate.ts';

export interface HealthOptions {
  /** milliseconds between health messages (FIELD_HEALTH_INTERVAL_S) */
  intervalMs: number;
  /** FIELD_DATA_DIR: its file system's free space is reported */
  dataDir: string;
  /** FIELD_CERT_FILE, read again for each message, so a renewed certificate shows */
  certFile: string;
  /** the field client's software version */
  version: string;
}

/** The last health message queued, for `fieldstream status`. */
export interface LastHealth {
  /** ISO 8601, when it was queued */
  at: string;
  messageId: string;
  payload: HealthPayload;
}

/**
 * The device's heartbeat: every interval, one `health` message with how the field client is doing
 * (uptime, backlog, free disk, certificate, clock) and what local programs reported (battery,
 * signal strength). It goes through the durable queue like any message, so it is signed, survives
 * a crash and is deleted only at its commit receipt; while the device is offline the messages wait
 * in the queue, each with its own timestamp, and tell afterwards how the device fared.
 *
 * The first goes at the first welcome from a gateway (the clock offset is known then), or
 * TIMINGS.healthFirstMaxDelayMs after start when no gateway answers, so a console sees a device
 * soon after it starts rather than one interval later.
 */
export class HealthReporter {
  private readonly startedAt = performance.now();
  /** local programs' values, kept until replaced or removed (in memory: a restart forgets them) */
  private readonly local = new Map<string, LocalValue>();
  private firstTimer: NodeJS.Timeout | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private begun = false;
  private stopped = false;
  last: LastHealth | undefined;

  constructor(
    private readonly client: FieldClient,
    private readonly connection: GatewayConnection,
    private readonly outbox: FileOutbox,
    private readonly options: HealthOptions,
    private readonly log: Logger,
  ) {}

  get intervalSeconds(): number {
    return Math.round(this.options.intervalMs / 1000);
  }

  start(): void {
    this.connection.on('frame', this.onFrame);
    this.firstTimer = setTimeout(() => this.begin(), Math.min(TIMINGS.healthFirstMaxDelayMs, this.options.intervalMs));
  }

  /** Stops the timers and waits for a message being built, so nothing is queued after this. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.connection.off('frame', this.onFrame);
    clearTimeout(this.firstTimer);
    clearInterval(this.timer);
    await this.running;
  }

  /**
   * Sets the values a local program reports (`null` removes one); the others are kept. Refused
   * whole with FIELD_INPUT_INVALID when the values kept would be more than the contract allows.
   */
  setLocal(update: LocalValuesUpdate): Record<string, LocalValue> {
    const next = new Map(this.local);
    for (const [name, value] of Object.entries(update)) {
      if (value === null) next.delete(name);
      else next.set(name, value);
    }
    if (next.size > LIMITS.healthLocalMaxValues) {
      throw new FieldStreamError(
        'FIELD_INPUT_INVALID',
        `health values: ${next.size} would be kept, at most ${LIMITS.healthLocalMaxValues} are (remove some with null)`,
      );
    }
    this.local.clear();
    for (const [name, value] of next) this.local.set(name, value);
    return this.localValues();
  }

  localValues(): Record<string, LocalValue> {
    return Object.fromEntries(this.local);
  }

  /** For the local status endpoint. */
  status() {
    return { intervalSeconds: this.intervalSeconds, local: this.localValues(), last: this.last ?? null };
  }

  /** Builds one health message and queues it; resolves once it is on disk (or was refused, logged). */
  report(): Promise<void> {
    // One at a time: a slow disk must not pile up reports.
    this.running ??= this.queueOne().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** The figures as they are now; a figure the device cannot tell is left out. */
  async snapshot(): Promise<HealthPayload> {
    const queue = this.client.queue;
    const now = Date.now();
    const oldest = queue.oldestUnacked();
    const [freeDiskBytes, certDaysLeft] = await Promise.all([this.freeDisk(), this.certDays(now)]);
    const offset = this.client.clockOffset;
    const payload: HealthPayload = {
      uptimeSeconds: Math.floor((performance.now() - this.startedAt) / 1000),
      queueMessages: queue.depth,
      // All that counts against FIELD_QUEUE_MAX_BYTES: the queue, the outbox, the refused messages set aside.
      queueBytes: queue.bytesOnDisk + this.outbox.bytes() + this.client.rejectedBytes,
      awaitingReceipt: queue.awaiting.count,
      ...(oldest !== undefined ? { oldestUnsentAgeSeconds: Math.max(0, Math.floor((now - oldest) / 1000)) } : {}),
      ...(freeDiskBytes !== undefined ? { freeDiskBytes } : {}),
      ...(certDaysLeft !== undefined ? { certDaysLeft } : {}),
      ...(offset !== undefined ? { clockOffsetMs: offset } : {}),
      version: this.options.version,
      intervalSeconds: this.intervalSeconds,
      ...(this.local.size > 0 ? { local: this.localValues() } : {}),
      timestamp: new Date(now).toISOString(),
    };
    return payload;
  }

  private readonly onFrame = (frame: DownlinkFrame): void => {
    if (frame.type === 'welcome') this.begin();
  };

  private begin(): void {
    if (this.begun || this.stopped) return;
    this.begun = true;
    clearTimeout(this.firstTimer);
    this.connection.off('frame', this.onFrame);
    this.timer = setInterval(() => void this.report(), this.options.intervalMs);
    void this.report();
  }

  private async queueOne(): Promise<void> {
    if (this.stopped) return;
    try {
      const payload = await this.snapshot();
      if (this.stopped) return;
      const m = await this.client.submit('health', payload);
      this.last = { at: new Date(m.acceptedAt).toISOString(), messageId: m.messageId, payload };
      this.log.debug({ messageId: m.messageId }, 'health message queued');
    } catch (err) {
      // A full queue refuses it like any message (FIELD_QUEUE_FULL), and the contract's check on
      // the way in (FIELD_INPUT_INVALID) a figure out of range; the next interval tries again.
      this.log.warn({ code: isFieldStreamError(err) ? err.code : undefined, err: (err as Error).message }, 'health message not queued');
    }
  }

  /** Bytes the field client may still write on its data folder's file system. */
  private async freeDisk(): Promise<number | undefined> {
    try {
      const s = await statfs(this.options.dataDir);
      const bytes = s.bavail * s.bsize;
      return Number.isSafeInteger(bytes) ? bytes : undefined;
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'free disk space unknown');
      return undefined;
    }
  }

  private async certDays(now: number): Promise<number | undefined> {
    try {
      const cert = new X509Certificate(await readFile(this.options.certFile));
      const days = daysUntil(Date.parse(cert.validTo), now);
      return Math.abs(days) <= LIMITS.healthCertDaysMax ? days : undefined;
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'certificate expiry unknown');
      return undefined;
    }
  }
}

const PackageSchema = z.object({ version: HealthPayloadSchema.shape.version });

/** The field client's software version: the repository's package.json (in the image at /app). */
export function softwareVersion(): string {
  try {
    return PackageSchema.parse(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'))).version;
  } catch {
    return 'unknown';
  }
}
