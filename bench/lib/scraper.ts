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

  start(): void {
    this.timer = setInterval(() => void this.scrapeAll(), this.intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
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
