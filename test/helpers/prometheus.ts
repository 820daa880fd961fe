import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';

const QueryAnswerSchema = z.object({
  status: z.string(),
  error: z.string().optional(),
  errorType: z.string().optional(),
  data: z.object({ resultType: z.string(), result: z.unknown() }).optional(),
});
const VectorSchema = z.array(z.object({ metric: z.record(z.string(), z.string()), value: z.tuple([z.number(), z.string()]) }));
const AlertsAnswerSchema = z.object({
  status: z.string(),
  data: z.object({ alerts: z.array(z.object({ labels: z.record(z.string(), z.string()), state: z.string() })) }),
});

/**
 * A real Prometheus (Debian's `prometheus`) in a folder of its own, on a free loopback port, with the
 * configuration given (written next to any rule files the caller put in `dir`).
 */
export class TestPrometheus {
  private constructor(
    readonly process: ManagedProcess,
    readonly url: string,
  ) {}

  static async start(dir: string, config: string): Promise<TestPrometheus> {
    mkdirSync(dir, { recursive: true });
    const conf = join(dir, 'prometheus.yml');
    writeFileSync(conf, config);
    const port = await freePort();
    const proc = new ManagedProcess({
      name: 'prometheus',
      command: 'prometheus',
      args: [`--config.file=${conf}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
      env: { PATH: process.env.PATH, HOME: dir },
      cwd: dir,
      logFile: join(dir, 'prometheus.log'),
      ready: { port },
    });
    await proc.start();
    const p = new TestPrometheus(proc, `http://127.0.0.1:${port}`);
    for (let i = 0; i < 100; i++) {
      if (await fetch(`${p.url}/-/ready`).then((r) => r.ok, () => false)) return p;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('prometheus is not ready');
  }

  /** /api/v1/query: the answer as Prometheus gives it (status "success" or "error" with the reason). */
  async query(expr: string): Promise<z.infer<typeof QueryAnswerSchema>> {
    const res = await fetch(`${this.url}/api/v1/query`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ query: expr }),
    });
    return QueryAnswerSchema.parse(await res.json());
  }

  /** The value of an expression that gives one sample (undefined when it gives none). */
  async scalar(expr: string): Promise<number | undefined> {
    const answer = await this.query(expr);
    if (answer.status !== 'success') throw new Error(`${expr}: ${answer.error}`);
    const v = VectorSchema.parse(answer.data?.result);
    return v[0] ? Number(v[0].value[1]) : undefined;
  }

  /** /api/v1/alerts: the alerts pending or firing now. */
  async alerts(): Promise<Array<{ labels: Record<string, string>; state: string }>> {
    const res = await fetch(`${this.url}/api/v1/alerts`);
    return AlertsAnswerSchema.parse(await res.json()).data.alerts;
  }

  stop(): Promise<void> {
    return this.process.stop();
  }
}
