import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RebirthRequests } from '../../field-client/src/inputs/sparkplug/rebirth.ts';
import { emptyOutcome } from '../../field-client/src/inputs/sparkplug/reorder.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';

/**
 * The rebirth requests remembered per edge node (rebirth.ts), bounded at LIMITS.sparkplugMaxEdgeNodes.
 * Full of requests still inside their interval, each request for another edge node looked through all
 * of them for one to forget, and found none: data from invented edge node ids (each refused as not
 * born, each asking) cost 10,000 steps a message, 50,000 such messages 5 s of the event loop, every
 * input and the link held meanwhile. The requests are kept in the order they were made, so the look
 * stops at the first one still inside its interval.
 */
describe('Sparkplug rebirth requests, many edge nodes', () => {
  const requests = () => new RebirthRequests({ minIntervalMs: TIMINGS.sparkplugRebirthMinIntervalMs, afterBoundMs: TIMINGS.sparkplugRebirthAfterBoundMs, maxEdgeNodes: LIMITS.sparkplugMaxEdgeNodes });
  const ask = (r: RebirthRequests, edge: string, now: number) => {
    const out = emptyOutcome();
    r.ask('G', edge, now, 'not born', out);
    return out.rebirth;
  };

  it('takes constant time per request once full of requests inside their interval', () => {
    const r = requests();
    const started = performance.now();
    let asked = 0;
    for (let i = 0; i < 5 * LIMITS.sparkplugMaxEdgeNodes; i++) if (ask(r, `E${i}`, 1_000)) asked++;
    const ms = performance.now() - started;
    assert.equal(asked, LIMITS.sparkplugMaxEdgeNodes, 'past the bound, no more remembered, none asked');
    assert.ok(ms < 1_000, `${5 * LIMITS.sparkplugMaxEdgeNodes} requests took ${Math.round(ms)} ms`);
  });

  it('forgets the requests past their interval, oldest first, an edge node asked again counting from its last request', () => {
    const r = new RebirthRequests({ minIntervalMs: 5_000, afterBoundMs: 300_000, maxEdgeNodes: 2 });
    assert.ok(ask(r, 'A', 0));
    assert.ok(ask(r, 'B', 1_000));
    assert.ok(!ask(r, 'C', 4_000), 'full, both inside their interval');
    assert.ok(ask(r, 'A', 6_000), "A's interval over: asked again");
    // B (1,000) is past its interval, A (6,000) is not: B forgotten, C remembered.
    assert.ok(ask(r, 'C', 6_500));
    assert.ok(!ask(r, 'A', 7_000), 'A still remembered, inside its interval');
    assert.ok(!ask(r, 'C', 7_000));
  });
});
