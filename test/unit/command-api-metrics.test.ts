import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CommandApiMetrics } from '../../internal-network/command-api/metrics.ts';
import type { CommandStore } from '../../internal-network/command-api/store.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { promtoolTestRules } from '../helpers/promtool.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

describe("the command API's refused responses counter", () => {
  it('exposes every code a response is refused with at 0 from the start, so that rate() and increase() see the first refusal', async () => {
    // A series that appears only at its first refusal, already at 1, shows Prometheus no increase:
    // the dashboards' "Command responses refused / s by reason" missed a forged or revoked device's
    // first (often only) response.
    const refused: Partial<Record<string, number>> = {};
    const m = new CommandApiMetrics({ store: { all: () => [] } as unknown as CommandStore, brokerConnected: () => true, refusedResponses: () => refused });
    // The codes believed-responses.ts refuses with, as written there.
    const source = readFileSync(join(repoRoot, 'internal-network', 'command-api', 'believed-responses.ts'), 'utf8');
    const codes = [...new Set([...source.matchAll(/refuse\('([A-Z_]+)'/g)].map((x) => x[1] as string))];
    assert.ok(codes.includes('SECURITY_REVOKED') && codes.length >= 4, codes.join(' '));
    const key = (reason: string) => `fieldstream_command_api_responses_refused_total{reason="${reason}",service="command-api"}`;
    const started = await m.metrics.registry.metrics();
    for (const code of codes) assert.equal(parseExposition(started).get(key(code)), 0, code);
    refused.SECURITY_REVOKED = 1; // what believed-responses.ts counts at the refusal
    const after = await m.metrics.registry.metrics();
    assert.equal(parseExposition(after).get(key('SECURITY_REVOKED')), 1);
    // The dashboards' expression, on those scrapes: the one refusal is seen.
    const samples = (text: string) => parseExposition(text).get(key('SECURITY_REVOKED'));
    const values = [...Array<string>(20).fill(String(samples(started))), ...Array<string>(20).fill(String(samples(after)))].join(' ');
    promtoolTestRules(`  - interval: 15s
    input_series:
      - series: '${key('SECURITY_REVOKED')}'
        values: '${values}'
    promql_expr_test:
      - expr: sum by (reason) (increase(fieldstream_command_api_responses_refused_total[10m])) > bool 0
        eval_time: 9m
        exp_samples:
          - labels: '{reason="SECURITY_REVOKED"}'
            value: 1
`);
  });
});
