import { mkdirSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type ConsoleMessage, type Page } from 'playwright-core';

/**
 * A real headless browser for the console's tests: Debian's chromium driven by playwright-core.
 * Each page records what would go unnoticed in a browser nobody watches (console errors, uncaught
 * exceptions, Content-Security-Policy violations), so a test can assert there were none, and
 * saves screenshots as the test's artifacts.
 */

export const CHROMIUM_PATH = '/usr/bin/chromium';
/** No sandbox: the tests may run as root in a container, where chromium's sandbox cannot start. */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
/** Where screenshots go unless a test names a folder (git-ignored). */
export const DEFAULT_ARTIFACTS = join(ROOT, 'test-artifacts');

/** A laptop screen: what the console is made readable on. */
const VIEWPORT = { width: 1366, height: 800 };

export interface PageProblems {
  /** console messages of type error that are not CSP reports (includes failed resource loads) */
  consoleErrors: string[];
  /** `securitypolicyviolation` events and the console's CSP messages */
  cspViolations: string[];
  /** exceptions no script caught */
  pageErrors: string[];
}

interface ViolationReport {
  directive: string;
  blockedURI: string;
  sourceFile: string;
  line: number;
  sample: string;
}

/** What each new document runs first: reports CSP violations to the test through a binding. */
function listenForViolations(): void {
  document.addEventListener('securitypolicyviolation', (e) => {
    const report = (window as unknown as { __fieldstreamCspViolation?: (r: unknown) => void }).__fieldstreamCspViolation;
    report?.({ directive: e.effectiveDirective, blockedURI: e.blockedURI, sourceFile: e.sourceFile, line: e.lineNumber, sample: e.sample });
  });
}

export class WatchedPage {
  readonly problems: PageProblems = { consoleErrors: [], cspViolations: [], pageErrors: [] };
  private shots = 0;

  constructor(
    readonly page: Page,
    readonly context: BrowserContext,
    private readonly artifactsDir: string,
  ) {
    page.on('console', (msg: ConsoleMessage) => {
      if (msg.type() !== 'error') return;
      const where = msg.location().url ? ` (${msg.location().url}:${msg.location().lineNumber})` : '';
      const text = `${msg.text()}${where}`;
      if (/Content[- ]Security[- ]Policy/i.test(msg.text())) this.problems.cspViolations.push(text);
      else this.problems.consoleErrors.push(text);
    });
    page.on('pageerror', (err) => this.problems.pageErrors.push(err.stack ?? String(err)));
  }

  /** Saves a PNG of the page as `<artifacts>/<name>.png` (numbered if the name repeats) and returns its path. */
  async screenshot(name: string, options: { fullPage?: boolean } = {}): Promise<string> {
    const safe = name.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[.-]+/, '') || `shot-${this.shots}`;
    this.shots++;
    const path = join(this.artifactsDir, `${safe}.png`);
    await this.page.screenshot({ path, fullPage: options.fullPage ?? false });
    return path;
  }

  /** Every problem recorded, except console errors matching one of `allow` (e.g. an expected 401). */
  unexpected(allow: RegExp[] = []): string[] {
    return [
      ...this.problems.cspViolations.map((p) => `CSP: ${p}`),
      ...this.problems.pageErrors.map((p) => `uncaught: ${p}`),
      ...this.problems.consoleErrors.filter((p) => !allow.some((re) => re.test(p))).map((p) => `console: ${p}`),
    ];
  }

  /** Throws, listing them, if anything unexpected was recorded. CSP violations are never allowed. */
  assertClean(allow: RegExp[] = []): void {
    const found = this.unexpected(allow);
    if (found.length > 0) throw new Error(`the page reported ${found.length} problem(s):\n${found.join('\n')}`);
  }

  async close(): Promise<void> {
    await this.context.close();
  }
}

export class TestBrowser {
  private constructor(
    readonly browser: Browser,
    /** where this browser's screenshots go */
    readonly artifactsDir: string,
  ) {}

  /**
   * Starts chromium. `artifacts`: a folder for screenshots, absolute or relative to the repository
   * (e.g. the test file's name); default test-artifacts/browser.
   */
  static async launch(options: { artifacts?: string } = {}): Promise<TestBrowser> {
    const dir = options.artifacts === undefined
      ? join(DEFAULT_ARTIFACTS, 'browser')
      : isAbsolute(options.artifacts) ? options.artifacts : join(ROOT, options.artifacts);
    mkdirSync(dir, { recursive: true });
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
    return new TestBrowser(browser, dir);
  }

  /**
   * Opens `url` in a context of its own (its own cookies: one per logged-in user), watching for
   * problems from before the first script runs.
   */
  async open(url: string, options: { viewport?: { width: number; height: number } } = {}): Promise<WatchedPage> {
    const context = await this.browser.newContext({ viewport: options.viewport ?? VIEWPORT });
    const page = await context.newPage();
    const watched = new WatchedPage(page, context, this.artifactsDir);
    await context.exposeBinding('__fieldstreamCspViolation', (_source, r: ViolationReport) => {
      watched.problems.cspViolations.push(`${r.directive} blocked ${r.blockedURI || 'inline'} at ${r.sourceFile}:${r.line}${r.sample ? ` (${r.sample})` : ''}`);
    });
    await context.addInitScript(listenForViolations);
    // tsx compiles the tests keeping function names: a named function inside a callback given to
    // page.evaluate() calls esbuild's __name helper, which the page does not have.
    await context.addInitScript({ content: 'globalThis.__name ??= (f) => f;' });
    await page.goto(url);
    return watched;
  }

  /** Another tab of the browser `of` is in (the same context, so the same cookies), on `url`. */
  async openTab(of: WatchedPage, url: string): Promise<WatchedPage> {
    const tab = new WatchedPage(await of.context.newPage(), of.context, this.artifactsDir);
    await tab.page.goto(url);
    return tab;
  }

  async close(): Promise<void> {
    await this.browser.close();
  }
}
