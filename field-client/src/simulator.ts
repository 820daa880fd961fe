import type { Logger } from '../../shared/logger.ts';
import type { CommandHandlers } from './commands.ts';
import type { FieldClient } from './field-client.ts';

/**
 * A simulated sensor station, for `npm start` and for trying a deployment without hardware:
 * a weather reading every interval, an event when the temperature crosses a threshold, and every
 * 60 readings a CSV file of the last minute. It answers the commands `ping` and `set_interval`.
 */
export class Simulator {
  private timer: NodeJS.Timeout | undefined;
  private tick = 0;
  private recent: string[] = [];
  private above = false;

  constructor(
    private readonly client: FieldClient,
    private intervalMs: number,
    private readonly log: Logger,
  ) {}

  registerCommands(handlers: CommandHandlers): void {
    handlers.register('ping', () => ({ status: 'completed', result: 'pong' }));
    handlers.register('set_interval', (params) => {
      const ms = (params as { ms?: unknown } | undefined)?.ms;
      if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 10 || ms > 3_600_000) {
        return { status: 'failed', result: 'params.ms must be a whole number of milliseconds from 10 to 3600000' };
      }
      this.intervalMs = ms;
      this.restart();
      return { status: 'completed', result: `sampling every ${ms} ms` };
    });
  }

  start(): void {
    this.restart();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private restart(): void {
    clearInterval(this.timer);
    this.timer = setInterval(() => this.sample(), this.intervalMs);
  }

  private sample(): void {
    const t = this.tick++;
    const now = new Date();
    const temperature = Math.round((21 + 4 * Math.sin(t / 30) + Math.random()) * 100) / 100;
    const humidity = Math.round((60 + 10 * Math.cos(t / 45)) * 10) / 10;
    const pressure = Math.round((1013 + Math.sin(t / 90) * 5) * 100) / 100;
    const fail = (kind: string) => (err: Error) => this.log.error({ err: err.message, kind }, 'simulated message refused');
    this.client.submit('timeseries', { temperature, humidity, pressure, timestamp: now.toISOString() }).catch(fail('timeseries'));

    const hot = temperature > 24.5;
    if (hot !== this.above) {
      this.above = hot;
      this.client
        .submit('event', {
          eventType: hot ? 'threshold_exceeded' : 'threshold_cleared',
          severity: hot ? 'high' : 'info',
          message: `Temperature ${hot ? 'above' : 'back below'} 24.5 °C (${temperature})`,
          timestamp: now.toISOString(),
        })
        .catch(fail('event'));
    }

    this.recent.push(`${now.toISOString()},${temperature},${humidity},${pressure}`);
    if (this.recent.length >= 60) {
      const csv = `timestamp,temperature,humidity,pressure\n${this.recent.join('\n')}\n`;
      this.recent = [];
      this.client
        .submit('file', {
          filename: `readings_${now.toISOString().replace(/[-:]/g, '').slice(0, 15)}.csv`,
          contentType: 'text/csv',
          data: Buffer.from(csv).toString('base64'),
          metadata: { size: Buffer.byteLength(csv), timestamp: now.toISOString() },
        })
        .catch(fail('file'));
    }
  }
}
