import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ManagedProcess } from './process.ts';
import { freePort } from './ports.ts';

/** A real VictoriaMetrics, which accepts InfluxDB's v2 write API. */
export class VictoriaMetrics {
  readonly process: ManagedProcess;
  readonly url: string;

  private constructor(dir: string, port: number) {
    this.url = `http://127.0.0.1:${port}`;
    this.process = new ManagedProcess({
      name: 'victoria-metrics',
      command: 'victoria-metrics',
      args: [
        `-httpListenAddr=127.0.0.1:${port}`,
        `-storageDataPath=${join(dir, 'data')}`,
        '-retentionPeriod=100y', // the examples are dated 2024
        '-search.latencyOffset=0s', // fresh points visible at once
      ],
      env: { PATH: process.env.PATH },
      cwd: dir,
      logFile: join(dir, 'victoria-metrics.log'),
      ready: { port },
    });
  }

  static async start(dir: string): Promise<VictoriaMetrics> {
    mkdirSync(dir, { recursive: true });
    const vm = new VictoriaMetrics(dir, await freePort());
    await vm.process.start();
    return vm;
  }

  /** Raw samples of the series whose name matches, as {labels, values, timestamps (ms)}. */
  async export(nameRegex: string): Promise<Array<z.infer<typeof ExportedSeriesSchema>>> {
    const res = await fetch(`${this.url}/api/v1/export`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ 'match[]': `{__name__=~"${nameRegex}"}` }),
    });
    const text = await res.text();
    return text
      .split('\n')
      .filter(Boolean)
      .map((l) => ExportedSeriesSchema.parse(JSON.parse(l)));
  }
}

/** One line of VictoriaMetrics' /api/v1/export: a series with its samples. */
const ExportedSeriesSchema = z.object({ metric: z.record(z.string(), z.string()), values: z.array(z.number()), timestamps: z.array(z.number()) });
