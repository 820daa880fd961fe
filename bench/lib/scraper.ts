/**
 * What Prometheus does to the services while it watches them: GET each /metrics every
 * `intervalMs`. The benchmark runs the same load with and without it to show what being watched
 * costs. Responses are read whole and dropped; a failed scrape is counted, never thrown.
 */
export class Scraper {
  private timer: NodeJS.Timeout | undefined;
  readonly stats = { scrapes: 0, failed: 0, bytes: 0 };

  constructor(
    private readonly urls: readonly string[],
    /** milliseconds between scrapes of every target (Prometheus's default is 60 s; 1 s is harsh) */
    private readonly intervalMs: number,
  ) {}

  private inFlight: Promise<void> = Promise.resolve();

  /** Scrapes at once, then every interval (a short run is scraped at least once). */
  start(): void {
    this.round();
    this.timer = setInterval(() => this.round(), this.intervalMs);
  }

  /** Stops, once the scrapes under way are done. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.inFlight;
  }

  private round(): void {
    this.inFlight = this.inFlight.then(() => this.scrapeAll());
  }

  private async scrapeAll(): Promise<void> {
    await Promise.all(
      this.urls.map(async (base) => {
        try {
          const res = await fetch(`${base}/metrics`);
          this.stats.bytes += (await res.text()).length;
          this.stats.scrapes++;
        } catch {
          this.stats.failed++;
        }
      }),
    );
  }
}
