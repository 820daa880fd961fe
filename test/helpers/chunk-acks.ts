/**
 * A gateway, as a field client's connection sees it, that acknowledges every file chunk it is sent
 * as it comes: for tests that drive a FieldClient through a GatewayConnection whose `send` pushes
 * the frames' text to an array. Each call of the returned function answers the frames sent since
 * the last and gathers the chunks' bytes by index (`received`, in the order of the file).
 */
export function chunkAcker(frames: readonly string[], answer: (frame: { type: 'ack'; messageIds: string[] }) => void): { received: Buffer[]; answerNew(): void } {
  const received: Buffer[] = [];
  let answered = 0;
  return {
    received,
    answerNew() {
      for (; answered < frames.length; answered++) {
        const frame = JSON.parse(frames[answered] as string) as { batch: Array<{ messageId: string; payload: { data: string; transfer: { index: number } } }> };
        for (const m of frame.batch) {
          received[m.payload.transfer.index] = Buffer.from(m.payload.data, 'base64');
          answer({ type: 'ack', messageIds: [m.messageId] });
        }
      }
    },
  };
}
