import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';

/** A CPU profile of this very process (the simulated field clients), in the .cpuprofile format. */
export class SelfProfiler {
  private readonly session = new Session();

  async start(): Promise<void> {
    this.session.connect();
    await this.session.post('Profiler.enable');
    await this.session.post('Profiler.start');
  }

  async stop(file: string): Promise<void> {
    const { profile } = await this.session.post('Profiler.stop');
    writeFileSync(file, JSON.stringify(profile));
    this.session.disconnect();
  }
}
