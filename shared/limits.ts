/** seconds in a day */
export const DAY_S = 86_400;
/** milliseconds in a day */
export const DAY_MS = DAY_S * 1000;

/** bytes. See LIMITS.brokerPacketMaxBytes (named here: LIMITS.deadLetterLetterMaxBytes is derived from it). */
const BROKER_PACKET_MAX_BYTES = 16 * 1024 * 1024;
/** messages. See LIMITS.batchMaxMessages. */
const BATCH_MAX_MESSAGES = 1000;
/** fields. See LIMITS.readingMaxFields. */
const READING_MAX_FIELDS = 256;
/** characters. See LIMITS.stringMaxChars. */
const STRING_MAX_CHARS = 64 * 1024;
/** ranges. See LIMITS.receiptMaxRanges. */
const RECEIPT_MAX_RANGES = 4096;
/** receipts. See LIMITS.receiptsPerMessage. */
const RECEIPTS_PER_MESSAGE = 2000;
/** values and containers. See LIMITS.envelopeMessageMaxValues. */
const ENVELOPE_MESSAGE_MAX_VALUES = 32 + READING_MAX_FIELDS + 16;
/** values and containers. See LIMITS.commandResultMaxValues. */
const COMMAND_RESULT_MAX_VALUES = READING_MAX_FIELDS;
/** values and containers. See LIMITS.envelopeHeaderMaxValues. */
const ENVELOPE_HEADER_MAX_VALUES = 8 * 1024;
/** characters. See LIMITS.deadLetterMessageMaxChars. */
const DEAD_LETTER_MESSAGE_MAX_CHARS = 16 * 1024;
/** bytes. See LIMITS.deadLetterSectionSlackBytes. */
const DEAD_LETTER_SECTION_SLACK_BYTES = BATCH_MAX_MESSAGES * ((READING_MAX_FIELDS + 16) * 18 + 512);
/** bytes per second. See CONSOLE.liveSlowestLinkBytesPerSecond (named here: CONSOLE.liveSnapshotPartMaxBytes is derived from it). */
const CONSOLE_LIVE_SLOWEST_LINK_BYTES_PER_SECOND = 5 * 1024;
/** milliseconds. See CONSOLE.liveDrainTimeoutMs (named here: CONSOLE.liveSnapshotPartMaxBytes is derived from it). */
const CONSOLE_LIVE_DRAIN_TIMEOUT_MS = 12_000;
/** bytes. See LIMITS.deadLetterLineOverheadBytes. */
const DEAD_LETTER_LINE_OVERHEAD_BYTES = 1024 * 1024;

/**
 * Protective limits, each with its unit and the reason for its value. Services may lower them
 * through their configuration; nothing raises them silently.
 */
export const LIMITS = {
  /** bytes. Largest WebSocket frame the gateway reads (ws `maxPayload`; ws defaults to 100 MiB,
   * far more than any message we accept). Sized for an inline base64 file of FILE_MAX_BYTES. */
  frameMaxBytes: 8 * 1024 * 1024,
  /** bytes. Largest payload (as JSON, in UTF-8) the field client queues: a frame of frameMaxBytes
   * less room for the message's envelope in its frame (ids, its signature: a few hundred bytes).
   * A larger one could never be sent (the gateway closes on a frame past its limit), so its
   * producer is told at once (FIELD_INPUT_INVALID) rather than after it was accepted. */
  queuedPayloadMaxBytes: 8 * 1024 * 1024 - 16 * 1024,
  /** bytes. Largest frame the field client reads from the gateway (its ws `maxPayload`; a larger one
   * closes the connection, FIELD_GATEWAY_FRAME_TOO_LARGE, and the client reconnects). The largest
   * legitimate downlink frames (shared/contract/downlink.ts): a commit of receiptMaxRanges ranges of
   * two 16-digit seqs, about 4,096 × 36 = 147,456 bytes; an ack of batchMaxMessages 128-character
   * ids, about 131,000; a command, its params within the command API's apiBodyMaxBytes (64 KiB).
   * Three times the largest, and far below ws's default of 100 MiB on a device with little memory. */
  downlinkFrameMaxBytes: 512 * 1024,
  /** bytes. Largest file a setting names that a process reads whole (a certificate, a key, a CRL, a
   * commands or tokens file: the largest legitimate, a device tokens file of 100,000 devices, is
   * about 20 MiB). A setting pointing at something endless (/dev/zero, a FIFO fed without end) is
   * refused past it, CONFIG_INVALID, where it ran the process out of memory. */
  settingFileMaxBytes: 64 * 1024 * 1024,
  /** bytes. Longest line of the CA's logs (ca/issued.jsonl, ca/revoked.jsonl) read back: a record is
   * a name, a serial, a date and a subject, a few hundred bytes. A longer one is no record (a damaged
   * log) and is not held: read whole, a log damaged into one endless line ran the tools out of memory. */
  pkiLogLineMaxBytes: 64 * 1024,
  /** bytes. Largest file carried inline in one message (base64 expands it by 4/3). */
  fileMaxBytes: 5 * 1024 * 1024,
  /** chunks. Most chunks of one chunked file transfer: at most replayWindowSeqs. A transfer is an
   * epoch of its own, its chunk indexes the sequence numbers, and the distributor receipts an
   * authentic chunk below the window unstored (as a copy): with more chunks than the window, a DMZ
   * holding chunk 0 back until the others passed would get the file deleted from its device. The
   * field client enlarges its chunks to fit (at most 160 KiB for a file of fileTransferMaxBytes). */
  fileMaxChunks: 65_536,
  /** bytes. Largest file sent in chunks (10 GiB). */
  fileTransferMaxBytes: 10 * 1024 * 1024 * 1024,
  /** folders. Most folders the distributor's file storage remembers having synced the parents of
   * (one per device and per transfer in progress); past it they are forgotten, and the next file of
   * each syncs its parents again: a few fsyncs, against memory growing with every transfer. */
  fileStoreSyncedDirsMax: 10_000,
  /** transfers. Most chunked transfers in progress whose chunks present the distributor's file storage
   * keeps in memory (a bitmap of at most fileMaxChunks bits, 8 KiB, each: 8 MiB in all), so that a
   * chunk's arrival does not list its folder (internal-network/distributor/chunks-present.ts). Past
   * it the least recently used is forgotten: its next chunk lists its folder once again. */
  fileStoreChunkIndexTransfersMax: 1_000,
  /** transfers. Most chunked file transfers one device may have unfinished in the distributor's file
   * storage (folders of chunks in FILE_STORAGE_PATH/.partial/DEVICE/ without a done marker), counted
   * there, so across distributors sharing the storage. Receipted chunks are kept until their transfer
   * ends, and the sweep never removes them: without a bound a device (hostile, or faulty) opening
   * transfers of up to fileTransferMaxBytes each and sending part of each filled the storage for every
   * device. A chunk that would open one more is neither stored nor receipted
   * (DISTRIBUTOR_FILE_TRANSFERS_OPEN); its device keeps the file and sends the chunk again later.
   * The field client runs fieldFileTransfersMax at once: 64 leaves room for transfers a device gave
   * up on (its outbox lost) and for distributors opening some at the same instant. Bytes are bounded
   * only through it: at most 64 × fileTransferMaxBytes (640 GiB) per device. */
  fileOpenTransfersPerDeviceMax: 64,
  /** devices. Most devices a distributor remembers as found at fileOpenTransfersPerDeviceMax (each
   * with its folder's modification time), so that their chunks sent again are refused without a
   * listing of the folder each (TIMINGS.fileOpenTransfersRecheckMs); past it all are forgotten. */
  fileOpenTransfersRefusedDevicesMax: 10_000,
  /** messages. Largest batch in one frame. */
  batchMaxMessages: BATCH_MAX_MESSAGES,
  /** fields. Most fields in one time-series reading, and in one event (its own keys included). */
  readingMaxFields: READING_MAX_FIELDS,
  /** characters. Longest string value stored in a field. */
  stringMaxChars: STRING_MAX_CHARS,
  /** levels. Deepest nesting of arrays and objects in a JSON value of free form (command
   * parameters and results). A value is checked, copied and serialised by recursion: a frame of
   * `[[[[…` a few kilobytes long would otherwise overflow the stack of whoever reads it. */
  jsonMaxDepth: 32,
  /** values and containers, as shared/contract/json-bound.ts counts them (each `{`, `[` and `,`
   * outside strings: at most a text's values and containers together). Most one message of an
   * envelope holds, but a command response's (responseEnvelopeMaxValues): its payload at its most (a
   * reading or an event of readingMaxFields fields: as many; a file's metadata of as many, with the
   * file's own keys and its transfer's: 16 more; the health values are fewer), and 32 for the
   * message's own keys, its signature's (`auth`: six) and the comma before it. */
  envelopeMessageMaxValues: ENVELOPE_MESSAGE_MAX_VALUES,
  /** values and containers (as envelopeMessageMaxValues). Room in an envelope for what is not its
   * messages: its header (a dozen keys), a gateway security report's entries (at most
   * gatewaySecurityReportMaxEntries, 1,000, of three keys each: 4 each). A gateway's envelope's
   * sections (4 each, at most one per message) fit in its messages' room; a command's params (at
   * most apiBodyMaxBytes, 64 KiB, so as many at most) in envelopeMaxValues, a command having no
   * messages. */
  envelopeHeaderMaxValues: ENVELOPE_HEADER_MAX_VALUES,
  /** values and containers (as envelopeMessageMaxValues). Most an MQTT payload from the DMZ parsed
   * as an envelope may hold (shared/contract/envelope.ts parseEnvelope: the distributor's, the
   * command API's, a dead-letter replay's), but one on a response's topic; past it the payload is
   * refused (CONTRACT_INVALID_ENVELOPE) before JSON.parse builds any of it. No legal one holds more:
   * batchMaxMessages messages at their most, and the header's room. JSON.parse makes an object of
   * 64 bytes of heap out of 3 bytes of text (`{},`, measured, Node 20): 16 MiB of them was 5.6
   * million objects, 360 MB, on each of the distributor's consumers (DISTRIBUTOR_CONSUMERS, up to
   * 32, in 4 GiB: docs/kubernetes.md), for the schema to refuse them; within this, some 20 MB. */
  envelopeMaxValues: ENVELOPE_HEADER_MAX_VALUES + BATCH_MAX_MESSAGES * ENVELOPE_MESSAGE_MAX_VALUES,
  /** values and containers (as envelopeMessageMaxValues: each `{`, `[` and `,` of its JSON text
   * outside strings). Most a command response's `result` may hold (shared/contract/payloads.ts
   * CommandResultSchema): as many as a reading's fields. Its size alone (stringMaxChars) let one
   * result be 32,000 values, and an envelope of responses as many as the brokers' largest packet
   * holds (5.6 million objects of 16 MiB of `{},`) for the command API and the distributor to
   * parse; bounded, an envelope on a response's topic is counted and refused unparsed as any other
   * (responseEnvelopeMaxValues). The gateway refuses a response past it
   * (CONTRACT_RESULT_TOO_MANY_VALUES); the field client answers a program's JSON output past it as
   * its text. */
  commandResultMaxValues: COMMAND_RESULT_MAX_VALUES,
  /** values and containers (as envelopeMessageMaxValues). Most an envelope on a command response's
   * topic may hold: batchMaxMessages responses, each of a message's room and a result of
   * commandResultMaxValues, and the header's room: some 570,000, at most 36 MB of what JSON.parse
   * makes (64 bytes an object) where 16 MiB of `{},` would make 360 MB. */
  responseEnvelopeMaxValues: ENVELOPE_HEADER_MAX_VALUES + BATCH_MAX_MESSAGES * (ENVELOPE_MESSAGE_MAX_VALUES + COMMAND_RESULT_MAX_VALUES),
  /** messages. Messages of one connection waiting for the broker's PUBACK; past it the gateway
   * stops reading from that socket until the broker catches up (backpressure, not loss). */
  inFlightPerConnection: 5000,
  /** bytes. A device whose unsent downlink exceeds this is too slow to read; it is disconnected
   * rather than let the gateway's memory grow (ws `send()` buffers without bound). */
  sendBufferMaxBytes: 4 * 1024 * 1024,
  /** messages. The gateway holds a device's ack back to leave with its next commit receipt (one
   * write to the device for both) only when it names at most this many messages: a device sending
   * a reading or a few per frame. A larger batch is acked at once, so that a device streaming
   * batches never waits on a receipt for room in its window (GATEWAY_ACK_HOLD_MS). */
  ackHoldMaxMessages: 50,
  /** connections. Most broker connections (DISTRIBUTOR_CONSUMERS) one distributor holds. */
  distributorMaxConsumers: 64,
  /** distributors. Most distributors keeping their state in one DISTRIBUTOR_STATE_DIR (replicas
   * sharing a bind mount, internal-network/distributor/state-lease.ts). */
  distributorMaxInstances: 64,
  /** bytes. Default of DEAD_LETTER_MAX_BYTES: most the dead-letter folder may hold on disk (all its
   * files, every replica's). Without a bound, a compromised DMZ publishing invalid 16 MiB payloads
   * filled the disk, and the distributor then retried a dead-letter write for ever: ingestion stopped. */
  deadLetterMaxBytes: 1024 * 1024 * 1024,
  /** fraction of DEAD_LETTER_MAX_BYTES. Letters of payloads that are not even a valid envelope
   * (nothing in them can be replayed, no device was told they are kept) are written only while the
   * folder holds less than this share: they can never take the room of letters that hold data a
   * device was told is durable (internal-network/distributor/dead-letter.ts). */
  deadLetterUnparsableShare: 0.5,
  /** bytes. Of a payload that is not a valid envelope, only its first bytes are kept (with its size
   * and SHA-256): enough to tell what sent it, and such a payload can never be replayed anyway. */
  deadLetterExcerptBytes: 4096,
  /** characters. A dead letter keeps at most this much of its error's message (a database's answer
   * may be long): what it holds of its payload is what matters, and the letter's size stays bounded. */
  deadLetterMessageMaxChars: DEAD_LETTER_MESSAGE_MAX_CHARS,
  /** bytes. How much larger than it came a payload a dead letter holds may be. A gateway's envelope
   * is kept one device section at a time, each written out again as an envelope of its own: its
   * header (versions, ids, times: under 512 bytes) and each number in full ("1e20" comes out as 21
   * digits: at most 18 bytes more), for up to batchMaxMessages messages of up to readingMaxFields
   * fields and a few numbers of their own (16). */
  deadLetterSectionSlackBytes: DEAD_LETTER_SECTION_SLACK_BYTES,
  /** bytes. What a dead letter's line holds besides its payload: its time, code, message (at most
   * deadLetterMessageMaxChars, 6 bytes each escaped at worst) and topic (at most 65,535 bytes, the
   * MQTT limit, likewise), with their keys: under 0.5 MiB, counted as 1 MiB. */
  deadLetterLineOverheadBytes: DEAD_LETTER_LINE_OVERHEAD_BYTES,
  /** bytes. The largest dead letter: a payload of up to brokerPacketMaxBytes (plus
   * deadLetterSectionSlackBytes) in base64, 4/3 of it, and the rest of its line; about 29 MiB. The
   * least DEAD_LETTER_MAX_BYTES may be: a bound that cannot hold one letter would leave its message
   * unacknowledged for good, whatever room an operator made. */
  deadLetterLetterMaxBytes: 4 * Math.ceil((BROKER_PACKET_MAX_BYTES + DEAD_LETTER_SECTION_SLACK_BYTES) / 3) + DEAD_LETTER_LINE_OVERHEAD_BYTES,
  /** milliseconds. Furthest a point's time (a device's own timestamp) may run ahead of the
   * distributor's clock: past it the message is refused (DISTRIBUTOR_WRITE_REJECTED) and kept as a
   * dead letter, replayable once its time has come. InfluxDB makes a shard for every week a point
   * falls in (a TimescaleDB hypertable a chunk), and a device whose clock, or whose author, dated its
   * readings across the next centuries would have the database make thousands. */
  pointMaxAheadMs: 7 * DAY_MS,
  /** days. Default of DISTRIBUTOR_MAX_POINT_AGE_DAYS: the oldest a point's time (a device's own
   * timestamp) may be, past which the message is refused (DISTRIBUTOR_WRITE_REJECTED) and kept as a
   * dead letter. The same shards as ahead (pointMaxAheadMs): a device dating its readings back across
   * the centuries since 1677 (the earliest InfluxDB takes) had the database make a shard for every
   * week, some 18,000; within 10 years at most about 520, and ten years hold any backlog a field
   * client's queue keeps. A device without a clock that starts in 1970 has its readings of before
   * its first time sync kept aside so, not written among those of 1970. */
  pointMaxAgeDays: 3650,
  /** lines. Most letters `fieldstream-admin dead-letters replay` lists as not replayed (those refused
   * again first); the rest are counted. */
  deadLetterReplayLinesShown: 50,
  /** messages. Most signed messages a replay remembers to leave their copies in later letters out
   * (about 100 MiB of memory; internal-network/distributor/dead-letter-replay.ts). */
  deadLetterReplayKeysMax: 1_000_000,
  /** milliseconds. A dead-letter file changed this recently is shown in use, as today's is: the
   * distributor may still be appending to it (its day by its own clock, a letter of 23:59). */
  deadLetterFileInUseMs: 15 * 60_000,
  /** attempts. A message whose handling fails with an error that has no code (a defect, not a
   * verdict on the message) is tried this many times, with the write backoff between (about a
   * minute at the default DISTRIBUTOR_RETRY_MAX_MS), then kept whole as a dead letter
   * (DISTRIBUTOR_MESSAGE_FAILED) and acknowledged. mqtt.js hands a connection its next message only
   * after this one's PUBACK, and the broker redelivers an unacknowledged one after a restart: retried
   * for ever, one such message would stall its connection for good, and then every one it reached. */
  distributorUnexpectedMaxAttempts: 10,
  /** log lines. Most the distributor writes per TIMINGS.floodLogIntervalMs, all its consumers together,
   * of a write failed and retried (DISTRIBUTOR_WRITE_FAILED: the database down, frozen or timing out;
   * file storage full or read-only), and as many again of failed system calls and failures without a
   * code retried; the rest are counted in the next such window's line. Each
   * consumer holds a message, so a store that stalled had every consumer write a line at each attempt
   * (32 lines for each failed request with DISTRIBUTOR_CONSUMERS=32), for as long as it stalled. */
  distributorRetryLogMaxPerWindow: 10,
  /** keys (device tag, reason, gateway). Most security-event counts the distributor stores for one
   * second (internal-network/distributor/security/refusal-tally.ts): each takes a millisecond of its
   * second as its time, so fewer than 1000; past it, further keys are counted under gateway "_other". */
  securityTallyMaxKeys: 500,
  /** devices. Most devices whose budget of security events stored one point each the distributor
   * keeps (refusal-events.ts lastEventTime: one a millisecond, securityEventMaxLeadMs ahead); past it,
   * those of earlier seconds are forgotten. */
  securityEventClockMaxDevices: 100_000,
  /** clears a second. Most empty retained publishes one distributor sends to clear the retained
   * presence of a device id it judges invented (internal-network/distributor/presence-clearer.ts):
   * each is a message to every subscriber of the presence topic (the command API, consumers, the
   * distributors), so a flood of invented ids doubles what they are sent at most up to this rate. */
  presenceClearsPerSecond: 1000,
  /** topics. Most presence topics one distributor holds waiting to be cleared (presenceClearsPerSecond);
   * a burst past it is counted (distributor_presence_clears_skipped_total) and its presences stay
   * retained until their ids are presented again. About 200 bytes each. */
  presenceClearsPendingMax: 50_000,
  /** bytes. Largest device presence left retained on the internal broker: a gateway's is some 200
   * bytes (StatusEnvelopeSchema's fields at their longest, as JSON.stringify writes them). A larger
   * one, valid or not, is padding the DMZ added, which the broker would hold per device id for ever
   * (up to its packet limit, 16 MiB) and hand to every new subscriber: cleared, as one that is no
   * valid presence is (internal-network/distributor/message-handler.ts). */
  retainedPresenceMaxBytes: 1024,
  /** gateway ids. Most distinct gateway ids a distributor stores presences under when
   * DISTRIBUTOR_GATEWAYS lists none (the default of DISTRIBUTOR_MAX_GATEWAYS): each is a series of
   * gateway_status and a tag value of device_status (security/gateway-admission.ts). */
  distributorMaxGateways: 1000,
  /** values. Most distinct `event_type` tag values one device's events are stored under in the
   * `events` measurement (security/tag-admission.ts); past it (or past eventTypesTotal) an event of a
   * new type is stored under `~other` with its type in the field `event_type_value`. A device's
   * types are a handful (alarms, door, power, its inputs' births and deaths); the value is chosen by
   * the device, and InfluxDB 1.x refuses a tag's new values past max-values-per-tag (100,000 by
   * default) for every device, so a device inventing types must not reach it. With
   * severitiesPerDevice it bounds one device's event series to about 100 × 12. */
  eventTypesPerDevice: 100,
  /** values. Most distinct `event_type` tag values of the whole fleet (security/tag-admission.ts):
   * a tenth of InfluxDB's max-values-per-tag, so that a hundred hostile devices filling their
   * eventTypesPerDevice cannot reach it, and values written before the bound (in the index until
   * retention drops their shards) have room. */
  eventTypesTotal: 10_000,
  /** values. Most distinct `severity` tag values of one device's events (as eventTypesPerDevice):
   * severities are a scale of a few words (debug, info, warning, error, critical). */
  severitiesPerDevice: 10,
  /** values. Most distinct `severity` tag values of the fleet (as eventTypesTotal): scales of
   * different vendors' devices together stay well under it. */
  severitiesTotal: 100,
  /** security events. Most refusals whose time the distributor remembers, so that the same refusal
   * checked again (its write retried after a failure that may have reached the database, its message
   * delivered again) is the same point, not a second at a later time (refusal-events.ts); the oldest are
   * forgotten first. Ten envelopes of batchMaxMessages refused messages: more than the consumers hold
   * unacknowledged at once. */
  securityEventTimesRemembered: 10 * BATCH_MAX_MESSAGES,
  /** milliseconds. How long the gateway waits for a PUBACK before reporting the message failed. */
  publishTimeoutMs: 30_000,
  /** bytes. The largest MQTT packet both Mosquittos take (`max_packet_size` in their mosquitto.conf,
   * which must say the same: test/unit/limits.test.ts). A larger one is not refused alone: the
   * broker drops the connection, and the MQTT client sends the stored packet again at every
   * reconnect, so one such publish would cut the gateway off its broker for good. */
  brokerPacketMaxBytes: BROKER_PACKET_MAX_BYTES,
  /** bytes. Longest line of the local store (TIMESERIES_LOCAL_PATH) read back: a point is made of
   * one message, at most brokerPacketMaxBytes, whose text JSON may write six bytes a character
   * (\u0000). A longer one is no point of ours (a damaged file without line breaks) and is not
   * held: read whole, it took the console's memory. */
  localStoreLineMaxBytes: 6 * BROKER_PACKET_MAX_BYTES,
  /** bytes. The gateway adds the messages of another frame to an envelope only while the envelope
   * and the frame together stay under this (frame sizes are the estimate); a frame alone may be
   * larger, up to frameMaxBytes, so two large frames of two devices never share an envelope past
   * brokerPacketMaxBytes. */
  envelopeJoinMaxBytes: 1024 * 1024,
  /** seconds. Longest a command may stay deliverable (the command API's ttlSeconds); the field
   * client's default FIELD_COMMAND_MAX_AGE_S, so a command delivered late but within its TTL runs. */
  commandMaxTtlS: 30 * DAY_S,
  /** characters. Longest device id; it is a certificate CN, an MQTT topic level and a folder name. */
  deviceIdMaxChars: 64,
  /** bytes. Longest file name (UTF-8) a device may give. */
  filenameMaxBytes: 200,
  /** sequence numbers. How far below the highest accepted sequence number of a device and epoch
   * the distributor still tells a new message from a copy (its replay window). A device never has
   * messages further apart than this outstanding at once (FIELD_COMMIT_WINDOW_MESSAGES is below
   * it), so a copy it sends again is always recognised, and answered with a receipt. */
  replayWindowSeqs: 65_536,
  /** bytes. The distributor's journal of accepted sequence numbers (about 60 bytes per device and
   * commit) is folded into a new snapshot of every window past this: every half minute at 10,000
   * single-reading messages a second (the snapshot of 10,000 devices takes 17 ms), and under a
   * second of reading it back at a start (measured: 11 MB of journal in 0.53 s). */
  replayJournalMaxBytes: 16 * 1024 * 1024,
  /** shapes. Most shapes of fields (the keys of a point's fields, in their order) the line protocol
   * encoder remembers sorted and escaped; past it the memory starts over: devices choose their
   * fields, and inventing new ones cannot grow the distributor's memory without bound. */
  lineProtocolFieldShapes: 1024,
  /** characters. Longest shape of fields (its keys joined) the line protocol encoder remembers; a
   * longer one is sorted and escaped each time. A reading of a few fields is a few dozen; with
   * lineProtocolFieldShapes this bounds the encoder's memory to a few MiB whatever devices send
   * (a reading of readingMaxFields fields of 128 characters would be 33,000). */
  lineProtocolShapeMaxChars: 1024,
  /** bytes. Most line protocol (before gzip) one InfluxDB write request carries; a batch of more
   * (DISTRIBUTOR_BATCH_MAX_POINTS bounds points, not their size) goes as several requests, one after
   * another, a line never cut (internal-network/distributor/sinks/influx-v1.ts, influx-v2.ts).
   * InfluxData suggests about 5,000 lines a request: 5,000 readings of a few fields (a few hundred
   * bytes a line) still fit in one. Envelopes of the largest legal shape (batchMaxMessages readings
   * of readingMaxFields fields, 4.5 KB a line) gathered into one batch of 5,000 points were 23 MB
   * in one request, which InfluxDB 1.x took 3 to 10 s to write (measured, random values): once it was
   * busy, past INFLUXDB_TIMEOUT_MS, and the request, retried whole, was never answered in time while
   * every message behind it waited. About 460 such lines fit in 2 MiB, written in under a second.
   * Well under what servers take in one body even without gzip: InfluxDB 1.x's max-body-size
   * (25,000,000 bytes by default), InfluxDB 3's max-http-request-size (10 MiB); a proxy's smaller
   * bound (nginx's 1 MiB) is met by halving on its 413, or on Caddy's 502 (sinks/sink.ts writeWithinLimit). */
  influxRequestMaxBytes: 2 * 1024 * 1024,
  /** requests. Times in a row one InfluxDB write request answered 502 is sent as it is before its
   * first point is tried alone, and, that one taken, the rest in halves (sinks/sink.ts
   * writeWithinLimit): Caddy answers 502 for a body over its request_body max_size, as for a store it
   * cannot reach. The tries pass a proxy's one-off 502 (a kept-alive upstream connection closing as it
   * was reused); a store down costs this many requests and one more per write, not one per line. */
  influxBadGatewayTries: 3,
  /** bytes. Most COPY text (sinks/postgres/copy.ts) one PostgreSQL transaction of the distributor
   * carries; a batch of more is written in several transactions, one after another, a row never cut
   * (sinks/postgres/rows.ts toTransactions). A table's rows of one batch were one string: messages of
   * the broker's largest packet (16 MiB), one from each consumer, made more than a JavaScript string
   * can hold (about 512 MiB; escaping a backslash twice, in JSON and for COPY, quadruples it), and
   * the write failed ("Invalid string length") and was retried for ever. 5,000 readings of a few
   * fields (a few hundred bytes a row) are about 1 MiB, one transaction as before; 5,000 of
   * LIMITS.readingMaxFields fields (38 MB) took 2 s in one (measured, PostgreSQL 15), so a part of
   * 16 MiB stays well inside POSTGRES_TIMEOUT_MS. A server slower than that gets less: the sink
   * halves a transaction past the timeout and writes less for a while (postgresTransactionMinBytes). */
  postgresTransactionMaxBytes: 16 * 1024 * 1024,
  /** bytes. The least the sink's transaction size goes down to after statement timeouts (the size
   * it remembers: sinks/postgres/sink.ts). A transaction past POSTGRES_TIMEOUT_MS (SQLSTATE 57014) is
   * written again in halves of its rows, down to one row, and the size for the following
   * transactions becomes half of its COPY text, not below this: about ten readings of a few fields,
   * where the transaction's round trips (three at least) cost more than its rows. A database that
   * cannot take that much within the timeout is failing rather than slow; the halving of each
   * transaction past the timeout still goes down to one row. */
  postgresTransactionMinBytes: 4 * 1024,
  /** transactions. Committed in a row within the timeout, each of at least half the size in force,
   * after which that size doubles again, up to postgresTransactionMaxBytes (sinks/postgres/sink.ts).
   * A size that timed out comes back after this many transactions at half of it: a database still
   * too slow for it costs one timeout (and its halving) every this many transactions, not every
   * second one; from postgresTransactionMinBytes the full size is back after 12 doublings. */
  postgresTransactionGrowAfter: 8,
  /** fields. Most fields (measurement and field name) whose type the distributor, and the
   * console's writer, keep to (internal-network/distributor/sinks/field-types.ts): about 100 bytes
   * each. Devices choose their field names; past it, the types of further fields are not kept to. */
  fieldTypesMaxEntries: 100_000,
  /** bytes. Longest answer to `SHOW FIELD KEYS` read: a few dozen bytes a field, so
   * fieldTypesMaxEntries fit several times over; a longer one is not read (the types are then
   * learnt from writes alone, logged). */
  fieldTypesAnswerMaxBytes: 32 * 1024 * 1024,
  /** milliseconds. The field-type guard learns a field's type from a write (or a refusal) only of
   * points dated within this of the distributor's clock, either side: the shard they are in is the
   * one being written now (or the next). A point dated long ago goes into an old shard, whose type
   * says nothing of the shards every device writes: learnt, one back-dated string of a field no
   * one wrote there had every device's value of it refused in every shard. An hour: what an
   * honest device sends as it reads comes within seconds; a shard group is an hour at the least. */
  fieldTypesLearnWindowMs: 60 * 60 * 1000,
  /** characters. Longest text of one contract issue in a refusal (the error frame a device gets,
   * the gateway's and the distributor's logs): see shared/contract/primitives.ts issueText. */
  contractIssueMaxChars: 256,
  /** milliseconds. The longest a field client waits for a commit receipt before it sends a message
   * again: the wait (FIELD_COMMIT_TIMEOUT_MS) doubles after each resend that brought no receipt, so
   * a long outage of the internal side costs a resend every quarter of an hour, not every minute. */
  commitTimeoutMaxMs: 15 * 60 * 1000,
  /** resends. A field client whose connection has had this many resends for want of a commit
   * receipt since its welcome, none answered by a receipt, leaves it for the next GATEWAY_URL
   * (FIELD_RECEIPTS_SILENT): the gateway takes messages, and the receipts do not come back through
   * it (its DMZ server's bridge to the internal network down since the device connected). With one
   * URL, twice as many (behind a load balancer the next connection may reach another server). With
   * the default FIELD_COMMIT_TIMEOUT_MS (60 s) and its doubling: 3 minutes, and 15 with one URL. */
  receiptsSilentMoveResends: 2,
  /** bytes. Room a file's queue record needs beside the file itself when the field client takes a
   * file within FIELD_QUEUE_MAX_BYTES: its JSON (a name of at most 255 bytes, a media type, a hash,
   * counts) and its segment framing are well under it, so a file that fits is not refused at its
   * record, after it is already in the outbox. */
  fileRecordRoomBytes: 4096,
  /** places. Most places one pass over a field client's queue segment (recovery, or the sender
   * reading back) looks at closely, a byte read from disk each, while it searches past damaged
   * records for the next whole one (record-resync.ts): places whose length is plausible and whose
   * body starts `{"`. Random bytes offer about one such place in 16 MiB, and the records' JSON
   * none, so this is reached only by bytes shaped like records; past it the search gives up and the
   * rest of that segment is treated as a torn tail, as it was before there was a search. */
  queueResyncProbesMax: 4096,
  /** bytes. Most checksum work one pass over a field client's queue segment spends on places that
   * passed the cheap checks (and end in `}`) while it searches past damaged records: a few of the
   * largest records (16 MiB each), well under a second of CRC-32 on a small device. Random bytes
   * reach a checksum about once in 4 GiB; each search for a damaged record's successor usually
   * costs the checksum of that successor alone. Past it, the search gives up as above. */
  queueResyncCrcMaxBytes: 64 * 1024 * 1024,
  /** files. Most files the folder input takes at once (copies across file systems, hashes): each is
   * given its room within FIELD_QUEUE_MAX_BYTES before it is taken, and the rest wait for a later
   * look, so a burst of files dropped in the folder neither races past the bound nor holds every
   * libuv pool thread the queue's writes need. */
  folderInputMaxFilesAtOnce: 2,
  /** entries. The watched folder is read this many entries at a time (opendir's buffer), and its
   * entries looked at (lstat) as many at once, each look: between them the event loop turns, so a
   * folder of thousands does not hold it, and libuv's threads (four by default, which the queue's
   * writes share) are not flooded with one request per entry at once. */
  folderInputEntriesAtOnce: 256,
  /** files. Most files of the watched folder remembered as sent though they could not be removed
   * from it (a read-only mount, another user's folder with the sticky bit: FIELD_FILE_SOURCE_KEPT),
   * each by its device, inode, size and modification time (in FIELD_DATA_DIR/watched-kept.jsonl, across
   * restarts), and forgotten once gone from the folder: not taken again until they change. Past it
   * the oldest is forgotten (and sent once more). */
  folderInputKeptMaxFiles: 10_000,
  /** transfers. Most file transfers the field client writes down as finished (delivered, set aside,
   * or their file gone) while their queue record is above the committed watermark of ack.json
   * (FIELD_DATA_DIR/transfers-finished.jsonl, a line of about 60 bytes each), so that a start
   * reading such a record back lets it go quietly instead of reporting its file missing. Past it one
   * is not written down: that report comes back for it, nothing is lost. */
  fileTransfersFinishedMax: 10_000,
  /** percent. Share of FIELD_QUEUE_MAX_BYTES the field client keeps for setting refused messages
   * aside (FIELD_DATA_DIR/rejected.jsonl and rejected/, which count against the same cap): new data
   * may fill the queue only to the cap less this, or less what is set aside if that is more. So a
   * message the gateway refuses after a long outage filled the queue still has room to be set
   * aside; held in the queue instead, at its head, it would keep every segment behind it from being
   * deleted and the device full for good. One twentieth, as file systems reserve for root. */
  rejectedReservePercent: 5,
  /** characters. Longest gateway reason kept with each refused message in rejected.jsonl. The
   * reason comes from the DMZ and is written once per message it names: a forged one of a whole
   * downlink frame, naming a thousand messages, would otherwise write half a GiB. */
  rejectedReasonMaxChars: 1024,
  /** ranges. Most ranges of sequence numbers in one commit receipt (one device and epoch); a
   * device's messages are committed mostly in order, so a write yields a few ranges, not thousands. */
  receiptMaxRanges: RECEIPT_MAX_RANGES,
  /** receipts. Most receipts (device and epoch) in one receipts message to a gateway; a write with
   * more devices than this is answered in several messages. */
  receiptsPerMessage: RECEIPTS_PER_MESSAGE,
  /** values and containers (as envelopeMaxValues). Most a receipts message the gateway reads from
   * its broker may hold (parseEnvelope's bound there): receiptsPerMessage receipts of
   * receiptMaxRanges ranges, 3 each (the range, its comma, the comma before it), and their own keys
   * (8). It comes from the internal side, not the DMZ; bounded as it may be, not more tightly. */
  receiptsMessageMaxValues: 64 + RECEIPTS_PER_MESSAGE * (8 + 3 * RECEIPT_MAX_RANGES),
  /** points. Most stored points in one message of the stored feed (fieldstream/v1/internal/stored):
   * a few hundred kilobytes at most, which the console parses between two of its ticks. */
  feedPointsPerMessage: 500,
  /** bytes. Largest message of the stored feed. The console refuses a larger one
   * (STORED_FEED_TOO_LARGE); a single stored point too large for it is left out and counted. */
  feedMessageMaxBytes: 1024 * 1024,
  /** points. Most stored points waiting for the feed's next tick (TIMINGS.feedCoalesceMs): 20,000
   * a second, far more than a console shows, and a bound on the memory and CPU the feed takes from
   * the distributor. Past it readings are left out first (counted), then everything else. */
  feedPendingMaxPoints: 5000,
  /** points. Room past feedPendingMaxPoints for the rarer kinds (presence, health, security events,
   * events, files, command responses), so a flood of readings does not hide them from the console. */
  feedPendingExtraPoints: 5000,
  /** points. Most of the DMZ's word (devices' and gateways' presences, gateways' security reports:
   * dmz-word-points.ts) waiting for the feed's next tick, out of both of the above. A taken DMZ
   * forging reports naming registered devices as fast as the bridge carries them filled the whole
   * room every tick, and the devices' signed health and events and the distributor's own findings
   * were left out of the console's live view; now they keep the rest. */
  feedPendingDmzWordMaxPoints: 2000,
  /** bytes. The feed adds nothing to an MQTT connection whose socket holds more unsent bytes than
   * this: the consumers' PUBACKs and the commit receipts go through it too, and must not wait. */
  feedSocketBufferMaxBytes: 1024 * 1024,
  /** tags. Most tags of a point in the stored feed. */
  feedPointMaxTags: 32,
  /** fields. Most fields of a point in the stored feed (a reading has at most readingMaxFields). */
  feedPointMaxFields: 512,
  /** characters. Longest measurement, tag key, tag value, field key and source in the stored feed. */
  feedNameMaxChars: 256,
  /** messages. The console's replay window per distributor run (internal-network/shared/stored-feed.ts):
   * a message whose sequence number is this far or more below the highest taken from that run, or
   * taken already, is refused (STORED_FEED_REPLAYED). A sliding window, not "higher than the last",
   * as IPsec's anti-replay window (RFC 4303 §3.4.3): the feed changes connection when the one it
   * used backs up, and a message or two of the old one may then arrive after the new one's first. */
  feedReplayWindowMessages: 64,
  /** runs. Distributor runs (a `boot` each) the console remembers per source: a restart starts a
   * new run, and messages of the previous one still in flight are taken, but not twice. */
  feedRunsPerSource: 4,
  /** sources. Distributors (DISTRIBUTOR_CLIENT_ID) the console remembers replay windows of; past it
   * the one heard from longest ago is forgotten. Its messages are then older than
   * TIMINGS.feedMaxAgeMs, refused as stale: forgetting it reopens nothing. Client ids named after
   * the host (distributor-HOSTNAME) change with every pod, so sources come and go. */
  feedSourcesMax: 1024,
  /** log lines of refused stored-feed messages per TIMINGS.feedRefusalLogWindowMs; the rest are
   * counted (console_feed_refused_total) and summed up in the next window's first line. */
  feedRefusalLogMaxPerWindow: 10,
  /** devices. Past this many devices with rate-limit buckets, the gateway forgets those idle for
   * TIMINGS.rateLimitIdleMs, so its memory does not grow with every device ever seen. */
  rateLimitTrackedDevices: 100_000,
  /** tokens. Most device tokens a gateway checks at once. A check is a slow hash (scrypt, ~100 ms on
   * one of libuv's 4 threads: ~40 a second); wrong tokens from many addresses could otherwise queue
   * thousands of checks (each also delaying the pool's other work). Past this, the upgrade is refused
   * GATEWAY_TOO_MANY_CONNECTIONS (503, try again later). Certificates are not checked this way. */
  deviceTokenChecksMax: 64,
  /** entries (source addresses). Most failed-token records the gateway keeps; past this, the
   * oldest are forgotten, so a flood of addresses cannot grow its memory. */
  tokenFailureTrackedKeys: 50_000,
  /** bits. Every budget kept per source address (the gateway's failed device tokens, the command
   * API's and the management API's failed bearer tokens, the console's logins) keeps an IPv6
   * source as its network of this long a prefix: a host is given a /64 (RFC 6177), and a budget
   * per address gave one attacker 2^64 of them (at the gateway, each of GATEWAY_TOKEN_MAX_FAILURES
   * slow hashes). A multiple of 16. */
  tokenFailureIpv6PrefixBits: 64,
  /** bits. The gateway also keeps a budget of failed device tokens per IPv6 site, the network of
   * this long a prefix (a site is given a /48 or a /56, RFC 6177): each of its /64s within its own
   * budget, one holder of a site had 65,536 of them, enough slow hashes to keep every check slot
   * (deviceTokenChecksMax) busy. A multiple of 16, shorter than tokenFailureIpv6PrefixBits. */
  tokenFailureSitePrefixBits: 48,
  /** A site's budget, in budgets of one source (GATEWAY_TOKEN_MAX_FAILURES each): the token devices
   * of a site's many networks with a wrong token (a renewal not yet copied) are not refused
   * together at once. */
  tokenFailureSiteFactor: 16,
  /** characters. Longest Authorization header the gateway looks at; longer is not a device token. */
  deviceTokenMaxChars: 256,
  /** days. Default lifetime of a device token (fieldstream-admin devices add/renew ID --token
   * --days N): the device certificates' default (VALIDITY_DAYS.device in pki/onboarding.ts), so a
   * device's credential is renewed as often whichever kind it holds. */
  deviceTokenValidityDays: 730,
  /** entries (device and code). Most entries in one gateway security report; more refusals in one
   * report's interval are counted as dropped. */
  gatewaySecurityReportMaxEntries: 1000,
  /** refusals. Most one entry of a gateway security report may count: a gateway refuses a device at
   * most a few thousand times a second, a report covers seconds; more is a forged count. */
  gatewayReportMaxCount: 1_000_000,
  /** commands. Most the command API keeps (its journal, COMMAND_STATE_PATH); past it the least
   * recently changed finished ones are forgotten. A command still to be answered never is. */
  commandStoreMaxRecords: 100_000,
  /** commands. Most that may wait for their device's answer at once (queued, sent or accepted);
   * more are refused with API_COMMANDS_FULL until some finish or expire. Half the record cap, so
   * the finished ones always leave room and a waiting command is never forgotten. */
  commandMaxLive: 50_000,
  /** commands. Most of one device's unanswered commands sent again at each COMMAND_RESEND_UNANSWERED_S
   * while it is online, the oldest first (command-api/resends.ts): a field client holds at most
   * FIELD_COMMANDS_CONCURRENCY (≤ 64) running and fieldCommandsWaitingMax (100) waiting, and puts
   * off the rest, so a device with thousands waiting was sent them all again every interval to run
   * none of the younger ones. The younger are sent again once the older are answered or expired
   * (and all of them at each presence). */
  commandResendPerDeviceMax: 128,
  /** commands. Most the command API looks up in one statement among the responses the distributor
   * stored (command-api/stored-responses.ts): a row each, without its result, which is read alone. */
  commandReconcileBatch: 1000,
  /** commands. Most the command API looks up in one InfluxQL statement (command-api/influx-responses.ts):
   * the statement goes in the URL of a GET (read-only), a clause of at most a few hundred characters
   * each, well inside the 1 MiB of a request's header that InfluxDB's HTTP server (Go's) takes. */
  commandReconcileInfluxBatch: 100,
  /** connections. Most the command API's HTTP server holds at once (Node's maxConnections); one more
   * is closed as it is accepted. The timeouts bound how long each lasts, not how many there are:
   * without it, enough of them took every file descriptor, and the journal could not be opened. */
  commandApiMaxConnections: 1_000,
  /** commands. Most one GET /v1/commands lists (its `limit`, default commandListDefault). */
  commandListMax: 1000,
  commandListDefault: 100,
  /** bytes. Most one GET /v1/commands answers: the newest commands that fit, with `truncated: true`
   * when more were asked for (at least one is listed). Each command is listed whole, its params
   * (up to apiBodyMaxBytes) and its device's result (up to stringMaxChars, six bytes a character
   * where terminal controls are escaped): commandListMax of them made an answer of hundreds of
   * megabytes, built in memory and held there while the caller read it. */
  commandListMaxBytes: 16 * 1024 * 1024,
  /** bytes. Most of one answer of the command API the console reads (its list is at most
   * commandListMaxBytes): past it the answer is dropped, CONSOLE_COMMAND_API_FAILED, rather than an
   * answer without end read into the console's memory. */
  consoleCommandApiAnswerMaxBytes: 32 * 1024 * 1024,
  /** bytes. An answer of the command API longer than this is written in pieces of it, each when the
   * one before has gone: a client reading it slowly shows its progress to TIMINGS.commandApiIdleTimeoutMs
   * at each piece. Written at once, Node counts a write's progress only until the kernel has taken
   * all of it: a 16 MiB listing read at 250 kB/s was cut off as idle with megabytes still to read. */
  commandApiAnswerPieceBytes: 64 * 1024,
  /** bytes. Most the listings (GET /v1/commands) being written to their callers at once may hold:
   * a listing is built whole (up to commandListMaxBytes) and held until its caller has read it. Past
   * it a listing is refused, API_BUSY (503, Retry-After), rather than 1,000 connections not reading
   * theirs holding 16 GiB. Sixteen of the largest, or thousands of the usual. */
  commandApiListingsHeldMaxBytes: 256 * 1024 * 1024,
  /** lines. The command journal is compacted when it holds more than twice as many lines as
   * commands plus these: a small journal is not rewritten at every change. */
  commandJournalSlackLines: 10_000,
  /** bytes. Most the commands the command API keeps may take as JSON (each up to apiBodyMaxBytes of
   * params, and a device's result); past it the least recently changed finished ones are forgotten,
   * as past commandStoreMaxRecords. The count alone let 100,000 commands of 64 KiB params grow the
   * journal past what one process can read back (V8's longest string is 512 MiB). */
  commandStoreMaxBytes: 256 * 1024 * 1024,
  /** bytes. Most the commands waiting for their device's answer may take as JSON; more are refused
   * with API_COMMANDS_FULL, like more than commandMaxLive. Half of commandStoreMaxBytes, so a
   * waiting command is never forgotten; a fleet command of MAX_TARGETS devices with params of
   * apiBodyMaxBytes (64 MiB) still fits an idle store. */
  commandMaxLiveBytes: 128 * 1024 * 1024,
  /** bytes. Most the results of devices' progress answers (`accepted`: no final state) may take as
   * JSON, all waiting commands together; past it the oldest are let go (the command shows
   * `resultNotKept`). A waiting command keeps its last such answer, of up to stringMaxChars as JSON
   * (six bytes a character where controls are escaped): commandMaxLive of them took gigabytes, past
   * commandMaxLiveBytes, which is checked only when commands are made. The final answer's result, what the operator waits for, is always
   * kept; a quarter of commandMaxLiveBytes still holds hundreds of bytes of progress for each of
   * commandMaxLive commands, and the waiting ones stay within half of commandStoreMaxBytes plus this. */
  commandProgressResultsMaxBytes: 32 * 1024 * 1024,
  /** bytes. The command journal is also compacted when it holds more than twice the bytes of the
   * commands kept plus these: with changes written without their params, it grows mostly by new
   * commands, and stays within about 2 × commandStoreMaxBytes. */
  commandJournalSlackBytes: 16 * 1024 * 1024,
  /** bytes. Longest command journal line read back: a command with params of apiBodyMaxBytes and a
   * device's result within frameMaxBytes fits twice over. A longer one is no record of ours (a
   * damaged file) and is skipped without being held in memory whole. */
  commandJournalLineMaxBytes: 16 * 1024 * 1024,
  /** bytes. Largest JSON body the command API reads. */
  apiBodyMaxBytes: 64 * 1024,
  /** bearer tokens. Wrong tokens from one source address within TIMINGS.apiAuthFailureWindowMs before the command API refuses that address unchecked (API_THROTTLED): the management API's budget (MANAGE.authMaxFailures), as both take the same credentials. */
  apiAuthMaxFailures: 20,
  /** bytes. Largest JSON body the field client's local HTTP input reads (a batch of readings). */
  localInputJsonMaxBytes: 8 * 1024 * 1024,
  /** bytes. Most of the JSON bodies (readings, events, health values) the local HTTP input reads at
   * once, each counted by its Content-Length (one without it as localInputJsonMaxBytes) from before
   * it is read until it is queued: each is held whole in memory, for up to
   * TIMINGS.localInputRequestTimeoutMs, and connections are not counted; past it a body is refused
   * (FIELD_INPUT_BUSY, send it again). Eight bodies of the largest size. */
  localInputJsonHeldMaxBytes: 64 * 1024 * 1024,
  /** connections. Most the local HTTP input holds at once (Node's maxConnections); one more is closed
   * as it is accepted (FIELD_INPUT_BUSY, logged). Each is bounded on its own (its headers' and body's
   * deadlines, its JSON body's share of localInputJsonHeldMaxBytes), not their number: a program
   * opening them without end took every file descriptor of the field client, its link's and queue's
   * included. Room for every sensor and program of a device many times over, as localMqttMaxConnections. */
  localHttpMaxConnections: 256,
  /** requests. Most requests pipelined on one connection to a service's metrics server that wait
   * for the answers before theirs (each made in its turn: shared/pipelined-requests.ts) before the
   * server reads no more of it: answered at once, the thousand pipelined requests of one read had
   * the metrics collected for each (100 KB and more) and held until read, by a client reading none. */
  metricsPipelinedRequestsMaxWaiting: 16,
  /** connections a service's metrics server holds at once (Node's maxConnections); one more is
   * closed as it is accepted. Its timeouts bound how long each lasts, not how many there are: opened
   * without end, they took the file descriptors the service needs for its devices, broker and files.
   * Room for Prometheus, the orchestrator's probes and the console's looks many times over. */
  metricsMaxConnections: 256,
  /** items. Most readings or events in one submission to a local input (an HTTP body, an MQTT
   * publish): taken in one append, one fsync. Ten batches of batchMaxMessages; far more than fit in
   * localInputJsonMaxBytes at any useful size, and the bound were they tiny. */
  localInputMaxItems: 10_000,
  /** bytes. Largest MQTT packet the broker exporter reads from a broker (its remaining length):
   * Mosquitto's $SYS messages are a topic and a number, a few dozen bytes, the longest a version
   * string. Checked as the packet's length arrives (shared/mqtt/packet-limit.ts), so a larger one
   * is never buffered: the DMZ broker, which the exporter dials and which is not trusted, could
   * otherwise send one of MQTT's 256 MB, more than the exporter's container has (mem_limit 256m). */
  brokerExporterMaxPacketBytes: 64 * 1024,
  /** bytes. Largest MQTT packet the local MQTT input reads (its remaining length): the largest payload
   * an input takes (localInputJsonMaxBytes, above sparkplugPayloadMaxBytes) and 64 KiB for the topic
   * and header. Checked as the packet's length arrives, so a larger one is never buffered (MQTT
   * itself allows 256 MB); the connection is closed. */
  localMqttMaxPacketBytes: 8 * 1024 * 1024 + 64 * 1024,
  /** bytes. Most the local MQTT input lets wait, not yet written, for one connection (a subscriber's
   * messages): past it that connection is closed as the next message is forwarded to it
   * (FIELD_INPUT_BUSY; a clean session, it misses what is published while away). aedes writes every
   * message forwarded to a subscriber that stopped reading into its socket's buffer, for the minute
   * of its drain timeout: every reading published, 1.2 GiB in 6 s. Two of the largest packets, so a
   * subscriber that reads is not cut off for a burst of them. */
  localMqttSubscriberBacklogMaxBytes: 2 * (8 * 1024 * 1024 + 64 * 1024),
  /** connections. Most the local MQTT input holds at once (Node's maxConnections); one more is closed
   * as it is accepted (FIELD_INPUT_BUSY, logged). Each is bounded on its own (its packets' size and
   * pauses), not their number: a program opening them without end took every file descriptor, and
   * each could hold a packet begun. Room for every sensor and program of a device many times over. */
  localMqttMaxConnections: 256,
  /** bytes. Most of the MQTT packets begun and not yet whole the local MQTT input holds across all its
   * connections, each counted by its remaining length from when it arrives (before the bytes are
   * buffered) until the packet is whole or its connection gone; past it the packet's connection is
   * closed (FIELD_INPUT_BUSY, logged; its sensor sends it again). Eight packets of the largest size,
   * as the HTTP input's localInputJsonHeldMaxBytes. */
  localMqttHeldMaxBytes: 64 * 1024 * 1024,
  /** bytes. An MQTT packet of at most this is not counted in localMqttHeldMaxBytes (readings as sensors
   * send them, PINGREQ): large packets filling that room hold up no small reading. Those are bounded
   * by localMqttMaxConnections: 16 MiB in all. */
  localMqttUncountedPacketBytes: 64 * 1024,
  /** log lines. Most the local MQTT input writes per TIMINGS.floodLogIntervalMs about what it refused
   * (invalid data, a topic that is no input, a full queue, a persistent session, a packet too large);
   * the rest are counted in the next. A sensor at QoS 1 sends again what was not acknowledged at
   * every reconnection, for as long as it is refused: a line each was a line a second per sensor
   * onto the device's storage, for the hours a full queue lasts. */
  localInputRefusalLogMaxPerWindow: 10,
  /** topic filters. Most one connection to the local MQTT input holds subscribed at once; one more is
   * refused (SUBACK failure, 0x80), logged once per connection. The broker keeps each in memory for
   * as long as the connection lasts: unbounded, a program subscribing in a loop took the device's
   * memory. A command handler's listener or an edge node needs a few. */
  localMqttMaxSubscriptions: 1_000,
  /** log lines. Most each HTTP server (console, command API, a metrics port, the field client's HTTP
   * input) writes per TIMINGS.floodLogIntervalMs about connections it closed as their clients stopped
   * reading their answers (shared/stalled-answers.ts); the line after says how many more. */
  stalledAnswersLogMaxPerWindow: 10,
  /** log lines. Most each local input (HTTP, MQTT) writes per TIMINGS.floodLogIntervalMs about
   * connections it closed as busy (localHttpMaxConnections; localMqttMaxConnections,
   * localMqttHeldMaxBytes); the rest are counted in the next. */
  localInputBusyLogMaxPerWindow: 10,
  /** publishes. Most QoS 1 and 2 readings and events the local MQTT input remembers having taken, by
   * client and packet identifier, to tell one a sensor sends again flagged DUP after a lost PUBACK
   * (inputs/mqtt-resends.ts) from a new one: some 200 bytes each, the oldest forgotten first. What a
   * client sends again is what was in flight when its connection broke (Paho keeps at most 20 in
   * flight by default), sent again as it reconnects: room for that of many clients at once. */
  localMqttTakenPublishesMax: 4_096,
  /** requests. Most answers the local HTTP input keeps for requests sent with an Idempotency-Key, to
   * answer a producer's retry as the request was answered (inputs/http-resends.ts); the oldest
   * forgotten first. A producer retries what it sent last, within seconds: room for many. */
  localInputKeysKeptMax: 10_000,
  /** bytes. Most those answers hold in all (each its key, a digest and its JSON: some 40 bytes per
   * message id, up to localInputMaxItems of them): an answer over it alone is not kept. */
  localInputKeptAnswersMaxBytes: 16 * 1024 * 1024,
  /** bytes. The file those answers are kept in across restarts (FIELD_DATA_DIR/http-keys.jsonl,
   * inputs/http-keys-file.ts) is rewritten with the answers kept once it holds more than twice their
   * bytes plus these, or more than twice localInputKeysKeptMax lines: the lines of answers forgotten
   * since (expired, or pushed out by newer ones) are dropped. */
  localInputKeysFileSlackBytes: 1024 * 1024,
  /** values. Most values local programs may report with the health message (battery, signal, ...):
   * each becomes a database field, and the message goes out every interval. */
  healthLocalMaxValues: 32,
  /** characters. Longest string a local program may report as a health value. */
  healthLocalStringMaxChars: 256,
  /** bytes. Largest JSON body of the local health input (PUT /v1/health): 32 values of 64-character
   * names and 256-character strings fit with room to spare. */
  healthLocalBodyMaxBytes: 32 * 1024,
  /** seconds. The longest health interval (FIELD_HEALTH_INTERVAL_S): a day. */
  healthIntervalMaxS: DAY_S,
  /** days. A certificate's days left in a health message lie within ± this (a thousand years). */
  healthCertDaysMax: 365_000,
  /** files. Most files in one backup archive: two replay-window slots per device and a few
   * certificate files per device leave room for several hundred thousand devices. */
  backupMaxFiles: 2_000_000,
  /** bytes. Most bytes a restore unpacks from one archive (16 GiB): a damaged or hostile archive
   * (a gzip bomb) cannot fill the disk of the internal server. */
  backupMaxBytes: 16 * 1024 * 1024 * 1024,
  /** bytes. Largest manifest of a backup archive, read into memory (about 200 bytes per file).
   * The backup counts it as the restore does (scripts/admin/backup-bounds.ts). */
  backupManifestMaxBytes: 512 * 1024 * 1024,
  /** bytes. Largest backup archive (1 GiB), and largest single file in one. A backup builds the
   * archive in memory (no plaintext copy of a key on disk); a restore reads it whole into memory
   * once, so the bytes it hashes (--expect-sha256) are the bytes it unpacks. */
  backupArchiveMaxBytes: 1024 * 1024 * 1024,
  /** bytes. Largest Sparkplug B payload the field client's Sparkplug input decodes (a birth of
   * thousands of metrics fits; larger is refused before protobuf allocates for it). */
  sparkplugPayloadMaxBytes: 4 * 1024 * 1024,
  /** bytes. Largest MQTT packet (its remaining length) the Sparkplug input reads from the plant's
   * broker. Checked as the packet's length arrives (shared/mqtt/oversized-publishes.ts), so a larger
   * one is never buffered: anyone publishing under spBv1.0/ there could send one of MQTT's 256 MB,
   * which mqtt.js holds whole, and twice, before anything looks at it. A PUBLISH over it is skipped
   * unread, the connection kept; any other packet over it closes the connection, which ends every
   * edge node's session there (its data STALE, as any connection lost). Well above
   * sparkplugPayloadMaxBytes: a payload between the two (a birth of an edge node with very many
   * metrics) is refused alone once read, as before. */
  sparkplugMaxPacketBytes: 16 * 1024 * 1024,
  /** metrics. Most metrics in one Sparkplug B payload, at its top level (the members of its
   * templates count toward sparkplugMaxElements). Counted on the wire before anything is decoded. */
  sparkplugMaxMetrics: 10_000,
  /** elements. Most elements one Sparkplug B payload may decode into, at every depth: each message
   * (a metric, top-level or a template's member; a template, parameter, dataset, row, dataset value,
   * property set, property value, property set list, metadata) and each entry of a repeated string
   * or number (dataset columns and types, property keys). Counted on the wire before anything is
   * decoded: 4 MiB of 2-byte empty messages is two million objects, which took protobufjs 1.5 s
   * and 200-400 MB of heap. 100,000 cost 10-20 MB and about 0.1 s, what 10,000 top-level metrics
   * cost already, and hold a birth of 10,000 metrics with 4 properties each (a property set of 4
   * keys and 4 values), or a dataset of 5,000 rows × 18 columns. */
  sparkplugMaxElements: 100_000,
  /** messages. Deepest nesting of messages in one Sparkplug B payload: the payload is at 0, its
   * metrics at 1, a template's members at 3, theirs at 5. 32 holds templates 15 deep; protobufjs
   * would recurse to its own bound, 100, and a deeper payload is no real edge node's. */
  sparkplugMaxDepth: 32,
  /** characters. Longest Sparkplug metric name taken (a field name is at most 128 in the end). */
  sparkplugNameMaxChars: 1024,
  /** log lines. Most refusals the Sparkplug input logs per TIMINGS.sparkplugLogWindowMs (the rest
   * are counted, and their number logged once the window ends): a broken publisher cannot flood the log. */
  sparkplugLogMaxPerWindow: 20,
  /** metrics. Most metrics a Sparkplug field name collision reports and logs
   * (SPARKPLUG_FIELD_NAME_COLLISION: the one keeping the name, then the birth's own), beside the
   * number sharing it: thousands of edge nodes whose ids come out alike (`ライン`, `圧延機`: `___`)
   * cannot make each birth list, or its log line carry, all the others. */
  sparkplugCollisionSampleMetrics: 5,
  /** edge nodes. Most Sparkplug edge nodes one field client follows (their births and the rebirth
   * requests it remembers): a publisher inventing edge node ids cannot grow its memory without bound. */
  sparkplugMaxEdgeNodes: 10_000,
  /** devices. Most devices (DBIRTHs of distinct device ids) one Sparkplug edge node may have born at
   * once: a real edge node (a PLC gateway, an RTU) fronts tens to hundreds of devices, so 1,000 is
   * ample, and with sparkplugMaxEdgeNodes it bounds the birth definitions held (a publisher inventing
   * device ids cannot grow memory without bound); a DDEATH or the node's next NBIRTH frees places. */
  sparkplugMaxDevicesPerNode: 1_000,
  /** refusals. How many births of one Sparkplug edge node refused in a row (for what they hold: an
   * NBIRTH that cannot be decoded, one without bdSeq, a metric without a data type), or data naming
   * a metric its birth did not declare after each birth, still ask for a rebirth at the usual pace
   * (TIMINGS.sparkplugRebirthMinIntervalMs): one lost or garbled once comes back good. Past them the
   * edge node sends the same each time, and each further one refused holds its rebirth requests off
   * twice as long, up to TIMINGS.sparkplugRebirthAfterBoundMs (sparkplug/rebirth.ts). In a row: the
   * one before was refused less than its hold-off and TIMINGS.sparkplugRebirthAfterBoundMs earlier,
   * whatever was taken between them. */
  sparkplugRefusedBirthsBeforeBackoff: 2,
  /** bytes. Most memory the birth definitions held (each metric's name, alias and data type, and each
   * device born, its id with it, over every edge node and device) may take, estimated (definitions.ts,
   * names.ts): the count bounds above allow 10,000 × 1,000 devices (5 GB born empty, counted alone), and
   * 10,000 × 1,000 births of up to LIMITS.sparkplugMaxMetrics metrics with 1,024-character names, far
   * past a field device's memory. 64 MiB holds some 230,000 metrics with 50-character names and
   * aliases: a large plant. A birth past it is refused (SPARKPLUG_DEFINITIONS_FULL); deaths and smaller births free room.
   * Each edge node has a share of it besides (sparkplugDefinitionsMaxBytesPerNode). */
  sparkplugDefinitionsMaxBytes: 64 * 1024 * 1024,
  /** bytes. Most memory the birth definitions of one edge node's session (its NBIRTH's, its devices'
   * DBIRTHs', and its seq digests) may take, estimated as for sparkplugDefinitionsMaxBytes: a quarter
   * of that budget, some 57,000 metrics with 50-character names, so that one edge node (a large SCADA
   * gateway, or one declaring ever more names) cannot take the whole budget and leave the plant's
   * other edge nodes' births refused. A birth past it is refused (SPARKPLUG_EDGE_NODE_DEFINITIONS_FULL). */
  sparkplugDefinitionsMaxBytesPerNode: 16 * 1024 * 1024,
  /** sessions. Most previous Sparkplug sessions the local MQTT input keeps per edge node (the ones
   * new NBIRTHs or NDEATHs ended, TIMINGS.sparkplugResendWindowMs each), to read in each what the
   * edge node sends again in it (sparkplug/resend.ts): Eclipse Paho publishes its new NBIRTH, then
   * sends again what it had no PUBACK for, so a publish that went unacknowledged across three
   * reconnections comes after three newer NBIRTHs. A link that breaks more often than that before a
   * resend gets through loses it (refused, not born). Their definitions count against
   * sparkplugDefinitionsMaxBytes, and a current birth that needs their room drops the oldest. */
  sparkplugPreviousSessionsPerNode: 4,
  /** births. Most refused NBIRTHs the local MQTT input remembers per edge node (their payload
   * timestamps and connections, TIMINGS.sparkplugResendWindowMs each: sparkplug/boundaries.ts), as
   * the bounds between sessions that place what the edge node sends again: a message published
   * after one and before the next birth taken belongs to the session that birth began, whose aliases
   * are unknown, never to an older one. Past it the oldest is forgotten: a message of its session
   * sent again after more refused births than this may be read in the session before it. */
  sparkplugRefusedBirthsPerNode: 4,
  /** messages. Most Sparkplug messages held per edge node while waiting for a missing seq (the
   * reorder buffer, TIMINGS.sparkplugReorderTimeoutMs): a message further ahead, or one more, is a
   * gap at once. Bounds memory to this many payloads per edge node. */
  sparkplugReorderMaxHeld: 64,
  /** bytes. Most memory the messages held for a missing seq may take over every edge node,
   * estimated (reorder.ts): without it 10,000 edge nodes could each hold 64 payloads of up to 4 MiB.
   * A message that would take them past it is a gap at once (its edge node is asked to rebirth). */
  sparkplugReorderMaxHeldBytes: 32 * 1024 * 1024,
  /** host applications. Most other Sparkplug host applications whose STATE the input keeps (a
   * publisher inventing host ids cannot grow its memory without bound; more are counted, not kept). */
  sparkplugMaxPeerHosts: 1_000,
  /** bytes. Largest STATE payload read (`{"online":true,"timestamp":…}` is about 40). */
  sparkplugStateMaxBytes: 1024,
  /** readings and events. Most a Sparkplug input holds taken and not yet in the queue (they wait
   * for the append on its way, then go in one): past it, a message's data is refused
   * (FIELD_QUEUE_FULL; a QoS 1 publish on the local broker is not acknowledged). Also the most
   * messages waiting so, those with nothing to store (null values, a template, a refusal) included:
   * each waits for its edge node's messages before it (sparkplug/appends.ts), and uncounted a flood
   * of them behind an append that did not end grew memory without bound. */
  sparkplugPendingMaxItems: 50_000,
  /** bytes. Most a reading the Sparkplug input makes may take as JSON (UTF-8): the metrics of one
   * timestamp past it go to another reading of that timestamp (sparkplug/mapping.ts toReadings). A
   * payload is bounded on the wire (sparkplugPayloadMaxBytes), but a String value grows as JSON (a
   * control character becomes six bytes), and one reading over queuedPayloadMaxBytes had the queue
   * refuse the whole batch it was in, other edge nodes' messages with it. Above the largest one field
   * takes (a 128-character name and stringMaxChars characters of six bytes each: 393 KiB), far below
   * queuedPayloadMaxBytes. */
  sparkplugReadingMaxBytes: 1024 * 1024,
  /** bytes. The journal of the Sparkplug sessions the local MQTT input saves (sparkplug/store.ts: one
   * line per edge node and batch, a few KiB each) is rewritten with one line per edge node past this,
   * or past twice that compacted size: the disk it takes stays bounded by the edge nodes followed. */
  sparkplugStoreJournalMaxBytes: 8 * 1024 * 1024,
  /** bytes. The field client stops handing frames to its WebSocket while more than this waits
   * unsent in it (ws `bufferedAmount`: what the kernel did not take yet), and goes on as it drains.
   * ws buffers without bound, so a gateway that stops reading (or a link that stalls) would
   * otherwise have the whole window, or every resend of it, pile up in the device's memory. Two of
   * the largest frames the field client makes (fieldFrameMaxBytes): one can go out while the next
   * waits, so a fast link is never idle for it; the kernel's own send buffer does the rest. */
  fieldSendBufferMaxBytes: 8 * 1024 * 1024,
  /** bytes. The least the field client may keep handed to its connection and not yet answered by
   * the gateway (field-client/src/send-pacing.ts), and all it may before it measured its link: a
   * batch of small readings; a larger frame still goes, alone. 16 KiB cross a 10 kbit/s link in 13 s. */
  fieldSendAheadMinBytes: 16 * 1024,
  /** bytes. The most the field client keeps handed to its connection and not yet answered, however
   * fast it measured its link: above what a link of 1 Gbit/s with a round trip of 100 ms needs
   * (12.5 MB), and about what ws's buffer (fieldSendBufferMaxBytes) and the kernel's held before the
   * client paced itself, so a fast link is no slower for it. */
  fieldSendAheadMaxBytes: 16 * 1024 * 1024,
  /** bytes. The smallest file chunk (FIELD_FILE_CHUNK_BYTES' least, and the least the field client
   * cuts a file in on a slow link it measured: send-pacing.ts chunkBytes). A chunk's frame carries
   * some 500 bytes besides its data (names, hash, signature): 3 % of this. */
  fieldFileChunkMinBytes: 16 * 1024,
  /** bytes. Most a chunk's frame carries besides its data in base64: the file's name (200 bytes of
   * UTF-8, a `"` escaped as two), its content type (255 characters, a control character escaped as
   * six), the transfer, the metadata, ids and the signature; about 2.5 KiB at most. A file taken once
   * a gateway's welcome said its frame limit is cut in chunks whose frames stay within it
   * (files/transfer-record.ts chunkBytesForFrame). */
  fieldFileChunkFrameOverheadBytes: 4 * 1024,
  /** transfers. Most files the field client sends chunks of at once, the oldest first (FIELD_FILE_WINDOW
   * chunks each); the others taken from the queue wait their turn. Files are sent after readings
   * anyway (send-pump.ts): more at once only spread the link over more of them, each taking longer,
   * and kept more chunks awaiting receipts. A file whose chunk cannot be read (the disk) gives its
   * turn to the next until it is read again (files/transfers.ts). */
  fieldFileTransfersMax: 2,
  /** files. Most files' records the field client takes from its queue at once: those sending and
   * those waiting their turn (fieldFileTransfersMax), each kept in memory (its record, some 500
   * bytes: 5 MB in all). Readings do not count against it, nor files against FIELD_WINDOW: readings
   * queued behind a backlog of up to this many files (a camera after an outage) go at once; behind
   * more, they wait for the first files of it to be done. */
  fieldFilesTakenMax: 10_000,
  /** bytes. Most message bytes the field client puts in one frame (less when the gateway's welcome
   * announces a smaller frame limit: half of it, leaving room for the frame's envelope). */
  fieldFrameMaxBytes: 4 * 1024 * 1024,
  /** bytes. The smallest frame limit (`limits.frameMaxBytes`) a gateway's welcome may announce: the
   * least GATEWAY_MAX_FRAME_BYTES allows. A welcome below it (0, negative) is refused as an invalid
   * frame (FIELD_GATEWAY_FRAME_INVALID): the client would otherwise fit nothing in a frame and send
   * nothing, for ever. `limits.batchMaxMessages` must be at least 1 for the same reason. */
  welcomeFrameMaxBytesMin: 1024,
  /** characters. Longest text from the gateway (an error frame's `message`, why a frame was
   * invalid) the field client writes in one log line: a downlink frame may hold 512 KiB of it. */
  fieldGatewayLogMaxChars: 1024,
  /** log lines. Most lines the field client logs about the gateway's error frames and invalid or
   * out-of-place frames per TIMINGS.fieldGatewayLogWindowMs; the rest are counted, and their number
   * logged in the next window. A compromised gateway can send such frames without end. */
  fieldGatewayLogMaxPerWindow: 20,
  /** log lines. Most command refusals that get no answer (unsigned, forged, replayed: a compromised
   * DMZ can send them without end), and most deliveries of commands not answered now (not run, or
   * their answer not queued: a genuine one delivered again without end), the field client logs per
   * TIMINGS.fieldCommandLogWindowMs, each; the rest are counted, and their number logged in the
   * next window. */
  fieldCommandLogMaxPerWindow: 20,
  /** Command ids the field client names in its start's log of damaged exec program records
   * (FIELD_COMMAND_PROGRAM_RECORD_DAMAGED); the rest are counted: a journal damaged throughout would
   * make one line of thousands of ids. */
  fieldCommandDamagedIdsLoggedMax: 20,
  /** answers. Most command answers the field client keeps in its command journal while the durable
   * queue refuses them (full, FIELD_QUEUE_FULL_POLICY=reject): each is queued again when its command
   * is delivered again. Past it, a new command is not run (not journaled: its next delivery runs
   * it), so that the journal and the memory hold at most this many answers of ~192 KiB
   * (stringMaxChars of JSON, in UTF-8). */
  fieldCommandAnswersHeldMax: 100,
  /** commands. FIELD_COMMANDS_CONCURRENCY's default: commands whose handler (an exec program each)
   * runs at once on the field client; the others wait for one of them to end (command-slots.ts). A
   * device back online is delivered every command queued for it at once, and ran them all together:
   * dozens of processes on a small device. */
  fieldCommandsConcurrencyDefault: 4,
  /** commands. Most FIELD_COMMANDS_CONCURRENCY takes. */
  fieldCommandsConcurrencyMax: 64,
  /** commands. Most commands the field client keeps waiting for a slot to run (FIELD_COMMANDS_CONCURRENCY
   * taken), in order of arrival; one more is not run, nor journaled (FIELD_COMMANDS_WAITING_FULL): its
   * next delivery runs it. Only genuine commands wait (authenticated, fresh, not seen before), each id
   * once, but a compromised gateway can deliver every one it ever held, and to a device that allows
   * unsigned commands anything: each waiting holds its frame (at most LIMITS.downlinkFrameMaxBytes). */
  fieldCommandsWaitingMax: 100,
  /** bytes. Longest environment string ("NAME=value" and its NUL) Linux passes to a program
   * (MAX_ARG_STRLEN, 32 pages: include/uapi/linux/binfmts.h); execve(2) fails with E2BIG past it.
   * An exec command's params (up to stringMaxChars of JSON, ~192 KiB in UTF-8) go in
   * FIELDSTREAM_PARAMS only when they fit, and always on stdin. */
  fieldCommandEnvStringMaxBytes: 128 * 1024,
  /** characters. Most of an exec command's standard output kept as its result: all a response
   * carries (stringMaxChars). A program's JSON output of tens of kilobytes was cut at 16 Ki
   * characters, and answered as a broken string. */
  fieldCommandOutputMaxChars: STRING_MAX_CHARS,
  /** characters. Most of an exec command's error output (its last characters) kept in the answer of a
   * program that failed, with room left in the response for the rest of it. */
  fieldCommandErrorOutputMaxChars: 16 * 1024,
  /** bytes. The field client's command journal is rewritten when it holds more than twice the bytes
   * of its last rewrite plus these (besides more than twice the ids it remembers in lines): the lines
   * of answers queued since are dropped. */
  fieldCommandJournalSlackBytes: 1024 * 1024,
  /** bytes. Longest line of the field client's command journal read back: an answer kept there is at
   * most stringMaxChars of JSON (~192 KiB in UTF-8). A longer line is no line of ours. */
  fieldCommandJournalLineMaxBytes: 256 * 1024,
  /** log lines. Most messages the embedded broker of npm start keeps from a client outside its role
   * (BROKER_NOT_AUTHORIZED: what a session queued, handed to a certificate of another role that took
   * its client id) it logs per TIMINGS.floodLogIntervalMs; the rest are counted in the next window.
   * A session may hold as many messages as were published while it was away. */
  embeddedBrokerForwardLogMaxPerWindow: 20,
  /** log lines. Most refusals of a device's frames (malformed, invalid, another device's id) one
   * connection logs per TIMINGS.gatewayRefusalLogWindowMs; the rest are counted in the metrics, and
   * their number logged in the next window. A device decides how many frames it sends. */
  gatewayRefusalLogMaxPerWindow: 20,
  /** log lines. Most messages refused for the broker (GATEWAY_BROKER_UNAVAILABLE: no PUBACK in time,
   * no connection, the backlog full; or the broker's refusal) the gateway logs per
   * TIMINGS.gatewayRefusalLogWindowMs, all devices together; the rest are counted in
   * gateway_refusals_total, and their number per code logged in the next window. While the broker
   * stalls every device's every frame is refused, and a line each filled the DMZ server's disk. */
  gatewayPublishFailureLogMaxPerWindow: 20,
  /** log lines. Most lines about messages from the DMZ broker to devices (a command forwarded, at
   * info; a command or receipts message refused as invalid or another gateway's, at warn) the gateway
   * writes per TIMINGS.gatewayRefusalLogWindowMs, each kind apart; the rest are counted, and their
   * number logged in the next window. Whoever holds the DMZ broker decides how many it sends (a genuine
   * signed command replayed without end, or garbage), and a line each filled the DMZ server's disk. */
  gatewayDownlinkLogMaxPerWindow: 100,
  /** log lines. Most refused WebSocket upgrades (every code: no or a wrong token, throttled, revoked,
   * wrong path, too many connections) the gateway logs per TIMINGS.gatewayRefusalLogWindowMs, all
   * devices and addresses together; the rest are counted in gateway_connections_refused_total, and
   * their number per code logged in the next window. Whoever reaches the token route decides how
   * many upgrades they send, and a line each filled the DMZ server's disk. */
  gatewayUpgradeRefusalLogMaxPerWindow: 100,
  /** connections. Most a gateway holds before their WebSocket is open (TLS handshake, headers,
   * identity check: dmz/gateway/pending-connections.ts); past it a new one is closed as it is
   * accepted. Anyone reaching the port may open them, each 40–50 KiB and a handshake's CPU; the
   * timeouts bound how long each lasts, this how many. A fleet reconnecting at once comes in at
   * this many at a time, the rest retrying with their back-off. GATEWAY_MAX_PENDING_CONNECTIONS. */
  gatewayMaxPendingConnections: 1_000,
  /** bytes. Most that all of a gateway's devices together keep buffered in messages they have begun
   * and not finished (dmz/gateway/unfinished-frames.ts); past it the connection keeping the most is
   * closed (1013). Each may send frameMaxBytes, and GATEWAY_MAX_CONNECTIONS × 8 MiB is 160 GiB:
   * without it, devices starting large messages and never finishing them could take all of the DMZ
   * server's memory. 32 files of 8 MiB inline at once. GATEWAY_UNFINISHED_FRAMES_MAX_MIB. */
  gatewayUnfinishedFramesMaxBytes: 256 * 1024 * 1024,
  /** bytes (of envelope text in UTF-8, about twice that in memory: the MQTT client's stored packet
   * and its socket's buffer). Most a gateway hands its MQTT client that the broker has not yet
   * acknowledged (dmz/gateway/uplink-publisher.ts backlogBytes); past it, new messages are answered
   * GATEWAY_BROKER_UNAVAILABLE at once. A publish past LIMITS.publishTimeoutMs is answered to its
   * devices, who send again, while the client keeps it until the broker answers: a broker that
   * stalls, or a bridge that backs up into it, had each device's resends pile up in the gateway for
   * as long as it lasted. About 17 s of the batched benchmark's flow. GATEWAY_BROKER_BACKLOG_MAX_MIB. */
  gatewayBrokerBacklogMaxBytes: 256 * 1024 * 1024,
  /** fraction (of gatewayBrokerBacklogMaxBytes). Most bytes of frames one device may have with the
   * broker unacknowledged (until its MQTT client settles their envelopes: PUBACK, or the client's
   * error), but never less than one frame of GATEWAY_MAX_FRAME_BYTES, so a device can always send; past it
   * the gateway stops reading that device's socket until the broker catches up, as for
   * inFlightPerConnection. That bound counts messages, and a message may be megabytes: one device
   * sending large frames to a stalled broker filled the shared backlog in about 30 s, and every
   * other device's messages were refused. With the defaults, 16 MiB a device. */
  gatewayDeviceBrokerBacklogShare: 1 / 16,
  /** connections. Of those, most one source address holds (an IPv6 one as its /64, throttleSource)
   * when devices connect to the gateway directly (GATEWAY_IDENTITY_SOURCE=tls): else one host
   * opening GATEWAY_MAX_PENDING_CONNECTIONS silent TCP connections, again as the handshake timeout
   * ends them, kept every device out. Devices behind one NAT address come in this many at a time.
   * GATEWAY_MAX_PENDING_PER_SOURCE. */
  gatewayMaxPendingPerSource: 50,
  /** log lines. Most the command API writes per error code and TIMINGS.floodLogIntervalMs of what the
   * broker hands it and it refuses or ignores (forged responses, invalid payloads): a compromised DMZ
   * publishes them through the bridge without end. The rest are counted, and their number logged in
   * the next window; command_api_responses_refused_total counts every refused response. */
  commandApiRefusalLogMaxPerWindow: 5,
  /** connections. How many WebSocket connections one device (its certificate's or token's id) may
   * open at a gateway in a row before it must wait TIMINGS.gatewayDeviceConnectRefillMs for each
   * next one (GATEWAY_RECONNECTING_TOO_FAST, 429): every connection opened costs two log lines and
   * two retained presences carried to the internal network and stored there, and a device
   * connecting and hanging up in a loop made as many as its TLS handshakes allowed. */
  gatewayDeviceConnectsBurst: 20,
} as const;

export type Limits = typeof LIMITS;

/** milliseconds. The gateway pings every device this often (and closes a connection that did not
 * answer the previous ping, unless the gateway paused reading it meanwhile: server.ts); the field
 * client counts each ping as a sign of life. */
const HEARTBEAT_MS = 30_000;

/**
 * Timings, each with its unit and the reason for its value. Those two tiers must agree on are
 * derived from one another (the field client's idle timeout from the gateway's heartbeat), so one
 * cannot be changed without the other. Settings with their own variable keep their defaults in
 * their service's config.ts.
 */
export const TIMINGS = {
  // -- Between the field client and the gateway (WSS) -------------------------------------------
  /** milliseconds. See HEARTBEAT_MS: the gateway's ping interval, and how long a device has to pong. */
  heartbeatMs: HEARTBEAT_MS,
  /** milliseconds. The field client gives up on a connection that showed no sign of life (frame or
   * ping) for this long and reconnects: three heartbeats, so one or two lost pings are not enough. */
  idleTimeoutMs: 3 * HEARTBEAT_MS,
  /** milliseconds. The field client gives up on a connection sooner once it sent a frame and heard
   * nothing since: a live gateway answers a frame at once (an ack, or an error within
   * LIMITS.publishTimeoutMs when its broker does not answer) and pings every heartbeat whatever it
   * does, even while it reads nothing (backpressure). A heartbeat and 10 s: a device that is sending
   * moves off a dead DMZ server (its power gone: no FIN, no RST) in 40 s, not 90. */
  answerTimeoutMs: HEARTBEAT_MS + 10_000,
  /** milliseconds. A TLS handshake (gateway) or WebSocket opening handshake (field client) not done
   * within this is given up: a stalled peer (slowloris) is dropped, not waited for. */
  handshakeTimeoutMs: 10_000,
  /** milliseconds. Silence a connection to the gateway may keep before its WebSocket is open; after
   * that the heartbeat watches it. */
  gatewayPreUpgradeIdleMs: 10_000,
  /** milliseconds. The gateway's HTTP headersTimeout: the upgrade request's headers must be in by then. */
  gatewayHeadersTimeoutMs: 10_000,
  /** milliseconds. The gateway's HTTP requestTimeout for the upgrade request. */
  gatewayRequestTimeoutMs: 15_000,
  /** milliseconds. A refused upgrade's answer is given this long to be read, then its socket is destroyed: the HTTP server allows half-open sockets, so a client that never ends its side would hold it for ever. */
  gatewayRefusalLingerMs: 1_000,
  /** milliseconds. A device connection the gateway closes (superseded, too slow) is given this long to answer the close, then its socket is ended. */
  gatewayClosingGraceMs: 1_000,
  /** milliseconds. How often Node looks for requests past the headers timeout (its default, 30 s,
   * lets them linger). */
  gatewayConnectionsCheckMs: 2_000,
  /** milliseconds. At start, how long the gateway waits to learn whether a socket file left at
   * GATEWAY_SOCKET still has a listener (EDGE_HOP=unix); no answer counts as one. */
  socketProbeTimeoutMs: 1_000,
  /** milliseconds. How long the distributor's /readyz waits for its look at the file storage folder
   * (FileStore.ready: stat and access(2)); one not answered by then (a hung network mount, a pool
   * of file-system threads all waiting) is not ready. Below the console's wait for a /readyz
   * (pipelineRequestTimeoutMs, 1.5 s): a /readyz that hung had the distributor judged not answering,
   * its broker and database checks unknown. */
  fileStoreReadyLookMs: 1_000,
  /** milliseconds. What the field client keeps handed to its connection and not yet answered by the
   * gateway: as much as its link, at the rate measured from the gateway's answers, carries in this
   * long (field-client/src/send-pacing.ts; within LIMITS.fieldSendAheadMinBytes and
   * fieldSendAheadMaxBytes). Each frame is signed when it is handed over, so this is about how long a
   * frame waits behind others before it reaches the gateway: far below DISTRIBUTOR_TRANSIT_MAX_S
   * (deviceTransitMaxMs, 15 minutes), and a reading queued behind a file waits about this, plus the
   * one chunk in front of it. Well above a round trip with the gateway's ack hold (GATEWAY_ACK_HOLD_MS,
   * 1 s; a satellite's 600 ms), so the measured rate can grow to the link's. */
  fieldSendAheadMs: 5_000,
  /** milliseconds. Least time over which the field client measures its link's rate from the
   * gateway's answers while frames are outstanding (send-pacing.ts): acks held up to
   * GATEWAY_ACK_HOLD_MS make shorter samples jump. */
  fieldSendRateSampleMs: 1_000,
  /** milliseconds. The link's rate the field client kept (FIELD_DATA_DIR/link-rate.json) is gone by
   * after a restart if it was measured at most this long ago (a week: a device may move to another
   * link); older, the link is measured again (field-client/src/link-rate.ts). */
  fieldLinkRateMaxAgeMs: 7 * 24 * 3600 * 1000,
  /** milliseconds. Least time between two writes of the link's measured rate (link-rate.ts). */
  fieldLinkRateSaveIntervalMs: 60_000,
  /** milliseconds. After connecting, the field client waits this long for the gateway's welcome
   * (which says its limits) before it starts sending without one. */
  welcomeWaitMs: 2_000,
  /** milliseconds. After a transient error from the gateway, the field client sends again from the
   * first unacknowledged message after this pause, giving the gateway a moment: the first pause,
   * doubled after each such rewind that brought no progress (TIMINGS.transientRewindMaxMs). */
  transientRewindMs: 1_000,
  /** milliseconds. A chunk of a file being sent whose read failed (EIO, EMFILE: not a file gone
   * from the outbox) is read again after this long, doubling after each failure in a row up to
   * fileReadRetryMaxMs, and at once at any send meanwhile (an ack, a receipt, new data). Left to
   * the next send alone, a transfer on an idle device stalled until something else happened. */
  fileReadRetryInitialMs: 1_000,
  /** milliseconds. See fileReadRetryInitialMs. */
  fileReadRetryMaxMs: 60_000,
  /** milliseconds. The field client's first reconnect delay (full jitter, doubling up to
   * FIELD_RECONNECT_MAX_MS), so thousands of devices do not reconnect in lockstep. */
  reconnectInitialMs: 500,
  /** milliseconds. The shortest reconnect delay full jitter may draw: a gateway that hangs up at
   * once (a refusal, a restart) is not dialled again in a tight loop. */
  reconnectMinMs: 100,
  /** milliseconds. When stopping, the field client waits this long for the gateway to answer its
   * close before it cuts the connection. */
  closeGraceMs: 2_000,

  // -- Commit receipts (field client) -----------------------------------------------------------
  /** milliseconds between looks for messages whose receipt is overdue */
  commitCheckIntervalMs: 1_000,
  /**
   * milliseconds after a reconnect before what was acknowledged on an earlier connection and still
   * awaits its receipt is sent again. A receipt that reached the gateway while the device was away
   * was dropped there, so waiting the whole commit timeout for it would only stall; receipts still on
   * their way arrive within this grace (one database write and the trip back).
   */
  reconnectReceiptGraceMs: 5_000,
  /** milliseconds. The queue writes its ack watermark (ack.json) at most this often: a crash forgets
   * the commits since, which only sends those messages again (they are recognised as copies). */
  ackPersistDelayMs: 200,
  /** milliseconds. After the disk refused ack.json (full, failing: FIELD_STATE_WRITE_FAILED), the
   * queue writes it again this often until it takes it: a failed try is a few system calls. */
  ackPersistRetryMs: 1_000,
  /** milliseconds between the field client's looks at the size of what it set aside (rejected.jsonl
   * and rejected/, counted against FIELD_QUEUE_MAX_BYTES): an operator who moves them off the device
   * frees that room within this, without a restart, and refused messages held in the queue for
   * lack of room are set aside then. One stat and one walk of a folder that is mostly empty. */
  rejectedCheckMs: 1_000,
  /** milliseconds an admin command waits for another to finish changing the tokens file (each holds
   * it for milliseconds); a lock older than this was left by a killed command and is taken over */
  adminLockWaitMs: 10_000,

  // -- MQTT (gateway, distributor, command API) -------------------------------------------------
  /** milliseconds between attempts to reconnect to the broker */
  mqttReconnectPeriodMs: 1_000,
  /** milliseconds an MQTT connection attempt (TCP, TLS, CONNACK) may take */
  mqttConnectTimeoutMs: 10_000,
  /** seconds. MQTT keepalive: a dead broker connection is noticed within one and a half of these. */
  mqttKeepaliveS: 30,
  /** milliseconds. A retired consumer's session (internal-network/distributor/session-retirement.ts)
   * is removed once no message has come on it for this long. */
  sessionRetireIdleMs: 2_000,
  /** milliseconds. How often a distributor looks for slots of DISTRIBUTOR_STATE_DIR left free
   * (session-retirement.ts retireFreeSlots): a replica gone for good leaves broker sessions there. */
  freeSlotCheckMs: 15_000,
  /** milliseconds. A slot free this long (no lease, or one not renewed) has its broker sessions taken
   * over by a replica still running: longer than a restart takes (compose's, a pod rescheduled), so
   * a replica coming back finds its sessions as it left them. */
  freeSlotGraceMs: 120_000,
  /** milliseconds. The distributor's first pause before writing again while the database is down
   * (full jitter, doubling up to DISTRIBUTOR_RETRY_MAX_MS). */
  distributorRetryInitialMs: 250,
  /** milliseconds. The distributor sends its waiting presence clears this often, a tick's share of
   * LIMITS.presenceClearsPerSecond each time (internal-network/distributor/presence-clearer.ts). */
  presenceClearTickMs: 100,
  /** milliseconds. A gateway id the distributor has not heard from for this long is forgotten by its
   * admission (security/gateway-admission.ts), making room under DISTRIBUTOR_MAX_GATEWAYS: a gateway's
   * id is new at each of its starts unless GATEWAY_ID is set, so ids kept for ever filled the bound
   * with restarts. Longer than a gateway is silent while it runs (it is heard at each presence of its
   * own or of its devices); invented ids add at most DISTRIBUTOR_MAX_GATEWAYS series per this. */
  gatewayAdmissionTtlMs: 7 * 24 * 3_600_000,
  /** milliseconds. An event tag value (event_type, severity) a device has not used for this long is
   * forgotten for that device by the tag admission (security/tag-admission.ts), making room under
   * LIMITS.eventTypesPerDevice and eventTypesTotal: a device's types change with its firmware and
   * inputs. Longer than a rare event's interval (a monthly self-test); a device inventing types adds
   * at most its bound of values per this, which the database's retention ends. */
  eventTagAdmissionTtlMs: 30 * DAY_MS,
  /** milliseconds. While a bound of the tag admission is reached, values past their TTL are looked
   * for at most this often: the look goes through every value remembered, and a device at its bound
   * sends thousands of new values a second. */
  eventTagAdmissionSweepMs: 60_000,
  /** milliseconds. An event stored under `~other` is logged at most once per device and tag per this
   * (every one is counted: distributor_event_tags_overflow_total). */
  eventTagOverflowLogMs: 60_000,
  /** milliseconds. From the distributor's start to its first sweep of what is retained on the internal
   * broker (internal-network/distributor/retained-sweeper.ts), then between sweeps: each is handed
   * every retained message (a fleet's presences), so not often; what the DMZ retains on the topics
   * the distributor reads is cleared as it arrives, the sweep finds the rest. */
  retainedSweepFirstMs: 10_000,
  retainedSweepIntervalMs: 5 * 60_000,
  /** milliseconds. A sweep has every retained message once none came for this long (the broker sends
   * them all at once after the SUBACK), or after retainedSweepMaxMs. */
  retainedSweepIdleMs: 1_000,
  retainedSweepMaxMs: 30_000,
  /** milliseconds. The stored feed gathers what was written for this long and publishes it in a few
   * messages: four updates a second for the console, not one MQTT message per database write. */
  feedCoalesceMs: 250,
  /** milliseconds. The console refuses a stored-feed message sent longer ago than this by its own
   * clock (STORED_FEED_STALE): a genuine one arrives within milliseconds (QoS 0 on the internal
   * broker), so only a replay, or clocks of distributor and console this far apart, is refused. A
   * minute leaves room for a console busy for seconds and hosts whose NTP has not yet converged. */
  feedMaxAgeMs: 60_000,
  /** milliseconds. The same, for a message sent (by the distributor's clock) ahead of the console's. */
  feedMaxLeadMs: 60_000,
  /** milliseconds. The window of LIMITS.feedRefusalLogMaxPerWindow. */
  feedRefusalLogWindowMs: 60_000,

  /** milliseconds. A gateway reports its security refusals, counted per device and code, this often. */
  gatewaySecurityReportMs: 5_000,
  /** milliseconds. A gateway publishes its `online` presence again this often while its broker does
   * not take it (a PUBACK of 0x10, no subscriber: the bridge has no session there yet), until taken
   * (dmz/gateway/gateway-presence.ts). */
  gatewayPresenceRetryMs: 5_000,
  /** milliseconds. A gateway publishes the presence of each device it holds again once its last
   * presence is this old (dmz/gateway/command-router.ts): otherwise a device connected for weeks has
   * no presence newer than its connection, and what reads presence within a window (the Devices
   * dashboards' "online", a retention policy that deletes old points) loses it. A day: one point a
   * device and day, and the dashboards' online window (2 days) is well past it. */
  presenceRefreshMs: DAY_MS,
  /** milliseconds. How often the gateway looks for presences due again (presenceRefreshMs): each
   * device's comes due a day after its connection, so the republications are spread as the
   * connections were, and one is at most this late. */
  presenceRefreshCheckMs: 15 * 60_000,
  /** milliseconds. Most a message's own arrival time (an envelope item's `receivedAt`) may lie from
   * its envelope's: the gateway gathers frames into one envelope for at most GATEWAY_LINGER_MS (at
   * most 1 s, dmz/gateway/config.ts), plus slack for a late timer. The distributor refuses a message
   * past it (SECURITY_STALE): the times are the DMZ's word, and one must not vouch for another. */
  envelopeItemArrivalSpreadMs: 5_000,
  /** milliseconds. Default of DISTRIBUTOR_TRANSIT_MAX_S: how long after its signing a frame may reach
   * the gateway. The field client signs a frame as it hands it to its socket, and a frame of a
   * file chunk (1.4 MB) behind others (up to LIMITS.fieldSendBufferMaxBytes) takes minutes to cross
   * a slow cellular link: within 30 s, every chunk of a file on a link under about 370 kbit/s was
   * refused as stale, the file resent for ever. The client now paces itself (TIMINGS.fieldSendAheadMs),
   * so a frame waits behind a few seconds of others; the largest, a 1 MiB chunk framed (1.4 MB), still
   * takes 15 minutes at about 12.5 kbit/s. Against a compromised DMZ, which writes the arrival
   * times, the signing time's bound by this side's clock (DISTRIBUTOR_MAX_DELAY_S plus this) holds. */
  deviceTransitMaxMs: 15 * 60_000,

  // -- Housekeeping -----------------------------------------------------------------------------
  /** milliseconds. A SIGINT/SIGTERM this soon after the one that began a stop is a copy of it, not a
   * second Ctrl-C (shared/service.ts): the terminal signals the whole process group (npm and the
   * service) at one key press, and npm passes its own on as well, within milliseconds (so does tsx's
   * command line, for a service run under it by hand). Long enough for those copies on a loaded
   * machine, short against a person pressing Ctrl-C again at a stop that hangs. */
  stopSignalCopyMs: 1_000,
  /** milliseconds. Each service with process metrics sets a timer this often and records how late
   * it fired (`fieldstream_event_loop_delay_seconds`, shared/metrics/event-loop.ts): often enough
   * that a stall of a tenth of a second is seen, rarely enough to cost nothing (ten callbacks a
   * second). */
  eventLoopProbeMs: 100,
  /** milliseconds a request's headers may take to come in to a service's metrics server (Node's
   * headersTimeout, 60 s by default): Prometheus and the probes send them at once. */
  metricsHeadersTimeoutMs: 5_000,
  /** milliseconds a whole request to a metrics server may take (it reads no body). */
  metricsRequestTimeoutMs: 10_000,
  /** milliseconds. A metrics server's connection whose answers have been stuck this long, its
   * client taking none of them, is closed (between one and two of it; shared/stalled-answers.ts):
   * Node's request timeouts end once a request is in, and a client that pipelined requests and
   * read nothing held its connection, and the metrics collected for it, for ever. An answer is
   * made in milliseconds: nothing is stuck that long for a client that reads. */
  metricsAnswerStallMs: 15_000,
  /** milliseconds a connection to a metrics server may stay silent before its first request; past
   * it it is closed. Node times out a request once it has begun, and a connection between two
   * requests (keepAliveTimeout), but not one that sends nothing at all: each such was held for ever,
   * a file descriptor of the service (the gateway's, the distributor's) each. Prometheus and the
   * probes send their request at once. */
  metricsIdleBeforeRequestMs: 10_000,
  /** milliseconds. A device's rate-limit buckets are forgotten once it was silent this long (looked
   * at when more than LIMITS.rateLimitTrackedDevices are tracked). */
  rateLimitIdleMs: 600_000,
  /** milliseconds between looks at the gateway's list of revoked certificate serials */
  revokedSerialsReloadMs: 2_000,
  /** milliseconds between two looks of the gateway at GATEWAY_CRL_FILE (a stat each), which it hands to devices holding an older CRL (dmz/gateway/crl-delivery.ts) */
  gatewayCrlRecheckMs: 2_000,
  /** milliseconds between looks at the gateway's device tokens file (GATEWAY_DEVICE_TOKENS_FILE) */
  deviceTokensReloadMs: 2_000,
  /** milliseconds between looks at the console's role tokens file (COMMAND_API_TOKENS_FILE): a token
   * taken out of it is refused, and its logins end, at most this long after the change. One stat
   * per this at most, however many requests and live streams check their token meanwhile. */
  roleTokensReloadMs: 1_000,
  /** milliseconds a looked-up device key (and the revoked list) is trusted before the registry's folder (and the list) is looked at again */
  deviceKeyRecheckMs: 1_000,
  /** milliseconds before a device key's own file is looked at again while the registry's folder is unchanged (a file overwritten in place) */
  deviceKeyFileRecheckMs: 10_000,
  /** milliseconds: a device id the registry's folder does not list has the folder looked at again
   * when the last look is older than this (a device onboarded a moment before its first message is
   * known at once; a flood of invented ids costs one stat of the folder per this at most) */
  deviceKeyMissRecheckMs: 50,
  /** milliseconds. The dead-letter folder is measured again (its files listed) at most this often
   * when a letter would pass its bound: an operator freeing room, or another replica writing, is
   * seen within a second, and a flood past the bound costs no listing per message. */
  deadLetterRescanMs: 1_000,
  /** milliseconds. A log line that repeats per message under a flood (a dead letter not kept, a
   * security refusal) is written at most once in this long, with the count of those left out. */
  floodLogIntervalMs: 10_000,
  /** milliseconds. Most a known device's budget of security events stored one point each may run
   * ahead of the clock: each refusal takes a millisecond of it, and those past this lead are counted
   * per second instead (refusal-tally.ts), so a flood of forged messages naming one device adds a
   * few points a second, not one per message. (The events' own times come from their envelopes:
   * refusal-events.ts eventTime, which takes an arrival no further ahead of the clock than this.) */
  securityEventMaxLeadMs: 1_000,
  /** milliseconds. Furthest back a refusal's security event may be placed by its envelope's arrival
   * time (refusal-events.ts eventTime), which is the DMZ's word: older, it is stamped with the
   * distributor's clock. Long enough for an envelope delivered again after a distributor restart to
   * keep its point; short enough that a compromised DMZ cannot put its forgeries' refusals outside
   * the range the Security dashboard (last 6 h) and the console show (DISTRIBUTOR_MAX_DELAY_S, the
   * bound before, is 7 days). */
  securityEventArrivalMaxAgeMs: 5 * 60_000,
  /** milliseconds. The distributor writes its counts of refusals (refusal-tally.ts) this often. */
  securityTallyFlushMs: 1_000,
  /** milliseconds. A refusal's log line is written at most once in this long per error code, with
   * the count of those left out (every refusal is in the metrics and the database). */
  securityLogIntervalMs: 1_000,
  /** milliseconds between the command API's sweeps that mark overdue commands expired */
  commandExpirySweepMs: 5_000,
  /** milliseconds. How long past its expiry a command waits to be expired while the database of
   * stored responses cannot be read (API_RESPONSES_UNREADABLE): its response may be there. Past it,
   * it is expired (a late answer still replaces `expired`). */
  commandReconcileGraceMs: 15 * 60_000,
  /** milliseconds. How long after the command API expired a command (with no final answer) it is
   * still looked up among the responses the distributor stored, at the start and at each connection
   * to the broker: a device runs a command until its expiry plus FIELD_COMMAND_CLOCK_SKEW_S (at most
   * a day), a program may run an hour (commands-file.ts), and the device's queue may hold the answer
   * a while longer. Bounded so that a start does not look up every expired command kept (100,000). */
  commandLateAnswerLookUpMs: 2 * 24 * 3_600_000,
  /** milliseconds. A device's answer the command API's journal could not take is written again after
   * this long, doubling up to commandJournalRetryMaxMs; the broker's PUBACK waits for it. */
  commandJournalRetryInitialMs: 250,
  /** milliseconds. See commandJournalRetryInitialMs. */
  commandJournalRetryMaxMs: 10_000,
  /** milliseconds. Shortest time between two resends of one device's waiting commands at its
   * "online" presence: a presence within it is served once it has passed. The DMZ publishes the
   * presence (a compromised one, as often as it likes), and each resend signs and publishes every
   * waiting command of the device again (a resend is not journaled: dispatcher.ts, publish). */
  commandRedeliverMinIntervalMs: 5_000,
  /** milliseconds. The distributor touches DISTRIBUTOR_HEALTH_FILE this often while connected and
   * subscribed; the compose healthcheck accepts a file touched within the last 30 s (3 intervals). */
  healthFileIntervalMs: 10_000,
  /** milliseconds. A temporary file of the distributor's file storage (`.incoming-*`: a file, a chunk
   * or a join of chunks being written, a verdict being written) not modified for this long is left
   * by a process that was killed, and the sweep removes it (file-store.ts, sweep). Distributors on
   * several machines share the storage, so whether its writer lives cannot be asked: only its age
   * tells. A live writer changes its file as it writes; what it does after its last write (an
   * fsync, hashing up to 7 names of a 10 GiB file already there) takes minutes, and the clocks of
   * the machines (an NFS server's sets the time) may disagree by some. Removing a live one loses
   * nothing anyway: it is never the only copy of anything receipted, and its writer fails its
   * rename or link and the message is retried. */
  fileTempStaleMs: 6 * 60 * 60_000,
  /** milliseconds. How long a device found at LIMITS.fileOpenTransfersPerDeviceMax unfinished
   * transfers is refused again without its folder in .partial/ listed, while that folder's
   * modification time is unchanged (no transfer opened, finished or moved meanwhile): each listing
   * reads every done marker the device ever left there, and a device sending refused chunks without
   * end had each cost one. A change the time cannot show (within the file system's timestamp
   * granularity of the listing) delays the device's next transfer by this long at most. */
  fileOpenTransfersRecheckMs: 10_000,
  /** milliseconds. The distributor sweeps its file storage at start and this often after (file-store.ts, sweep). */
  fileStorageSweepMs: 60 * 60_000,
  /** milliseconds. A distributor renews its lease on its slot of DISTRIBUTOR_STATE_DIR this often;
   * a lease not renewed for stateLeaseExpiryMs (three renewals) was left by a process that is gone. */
  stateLeaseRenewMs: 5_000,
  stateLeaseExpiryMs: 15_000,
  /** milliseconds. How long a distributor waits for another one's claim of a slot (milliseconds
   * each); a claim older than this was left by a process killed while claiming. */
  stateLeaseClaimWaitMs: 5_000,
  /** milliseconds. The command API's HTTP headersTimeout and requestTimeout. */
  commandApiHeadersTimeoutMs: 5_000,
  commandApiRequestTimeoutMs: 10_000,
  /** milliseconds. How often the command API's HTTP server looks for requests past those timeouts
   * (Node's connectionsCheckingInterval): its default, 30 s, let a client trickling its headers hold
   * its connection six times headersTimeout. */
  commandApiConnectionsCheckMs: 1_000,
  /** milliseconds. Longest a command API connection may go without a write to its client getting
   * under way (Node's server.timeout; an answer goes in pieces of LIMITS.commandApiAnswerPieceBytes,
   * each a write): past it the connection is closed. The request timeouts end once a request is
   * in; a client that then read nothing (requests pipelined, one big listing) held its connection,
   * and every answer and request the server had made for it, for ever: a thousand of them, no
   * token needed, took every connection (LIMITS.commandApiMaxConnections) and gigabytes. Node
   * counts what the client sends as activity too: a connection whose answers have had nothing
   * taken for as long is closed all the same, whatever it sends (shared/stalled-answers.ts). */
  commandApiIdleTimeoutMs: 15_000,
  /** milliseconds. The window of LIMITS.apiAuthMaxFailures (5 minutes, as MANAGE.authFailureWindowMs). */
  apiAuthFailureWindowMs: 5 * 60_000,
  /** milliseconds. The field client's local HTTP input: the time a JSON body (a reading, an event,
   * health values: at most LIMITS.localInputJsonMaxBytes) has to arrive in all. A file's body has no
   * such bound (10 GiB written to an SD card takes minutes): it is cut off only when it stalls
   * (localInputIdleTimeoutMs). */
  localInputRequestTimeoutMs: 120_000,
  /** milliseconds. The field client's local HTTP input: the longest a request's body may pause (no
   * byte arriving) before it is cut off, its upload's room within FIELD_QUEUE_MAX_BYTES given back: a
   * producer that froze, or lost its power or link mid-upload (no FIN), would otherwise hold it. */
  localInputIdleTimeoutMs: 60_000,
  /** milliseconds. The field client's local HTTP input closes a connection whose answers have been
   * stuck this long, its program taking none of them (between one and two of it;
   * shared/stalled-answers.ts): once a request's body is in nothing else watches it, and a program
   * that pipelined requests and read nothing held its connection, one of
   * LIMITS.localHttpMaxConnections, for ever. A request the device is still taking (a large file
   * hashed and synced, minutes) has no answer waiting yet, and is never cut off by this. */
  localInputAnswerStallMs: 60_000,
  /** milliseconds. The field client's local HTTP input headersTimeout, and how often Node looks for
   * requests past it (its default, 30 s, lets them linger). */
  localInputHeadersTimeoutMs: 30_000,
  localInputConnectionsCheckMs: 2_000,
  /** milliseconds. How long closing the local HTTP input waits for the requests whose body is in to
   * be answered (their data being queued) before it cuts them off: a large file being hashed and
   * synced may take longer, and is then cut off unanswered all the same. The local MQTT input waits
   * as long for the readings and events it is appending to be acknowledged. */
  localInputCloseGraceMs: 10_000,
  /** milliseconds. How often a process renews its lock (shared/process-lock.ts: the field client's of
   * FIELD_DATA_DIR, the command API's of COMMAND_STATE_PATH), and looks whether another took it over
   * meanwhile (it was stalled past dataLockExpiryMs). */
  dataLockRenewMs: 2_000,
  /** milliseconds. Such a lock not renewed for this long is its holder's no more: how long a start
   * waits for one left by a holder it cannot see (on another host, in another container) before
   * taking it over. Well past a renewal missed by a loaded device. */
  dataLockExpiryMs: 15_000,
  /** milliseconds. How often a start waiting for that looks at the lock again. */
  dataLockPollMs: 500,
  /** milliseconds. A file beside `npm run stack`'s stack.lock or a port reservation (one written
   * aside, a take-over marker: shared/file-takeover.ts) that names no process is removed once this
   * old: younger, it is one a process running now has made and not written yet (it writes it at once).
   * Those beside the field client's lock are judged as its lock is (dataLockExpiryMs). */
  takeOverDebrisMs: 60_000,
  /** milliseconds. How long the local HTTP input keeps a request's answer for its Idempotency-Key
   * (inputs/http-resends.ts): a retry later than this is taken as a new request. Counted on the
   * machine's monotonic clock, across restarts of the field client too; across a reboot, on the wall
   * clock, never less than it says (inputs/http-keys-file.ts). */
  localInputKeyKeptMs: 24 * 60 * 60 * 1000,
  /** milliseconds. The field client's local MQTT input: the longest a packet begun may pause (no byte
   * arriving) before its connection is closed. Up to LIMITS.localMqttMaxPacketBytes of a packet is
   * held until it is whole, and MQTT lets a client ask for no keep-alive: a sensor that froze or lost
   * its power mid-packet (no FIN) held that memory for ever, a few hundred such a device's RAM. A
   * connection between packets may stay as long as its keep-alive allows. */
  localMqttPacketIdleTimeoutMs: 60_000,
  /** days before a certificate's expiry from which services warn: at start for their own, the
   * gateway at each connection of a device, the field client's doctor. */
  certWarnDays: 30,
  /** milliseconds. The field client's first health message goes at the gateway's first welcome (its
   * clock offset known), or this long after start when none came (or one interval, if shorter). */
  healthFirstMaxDelayMs: 5_000,
  /** milliseconds. Least time between two rebirth requests (NCMD) to one Sparkplug edge node: a
   * node that keeps gapping is asked again, but not once per message. */
  sparkplugRebirthMinIntervalMs: 5_000,
  /** milliseconds. How long a Sparkplug edge node's data refused as not born asks no rebirth after
   * one of its births was refused for a bound (SPARKPLUG_TOO_MANY_EDGE_NODES, _TOO_MANY_DEVICES,
   * _DEFINITIONS_FULL; sparkplug/rebirth.ts). That birth would come back the same: asked every
   * sparkplugRebirthMinIntervalMs, the edge node sent every birth again, the others' values stored
   * again each time, for as long as it ran. Asked again after this, as a death may have made room.
   * Also the longest hold-off after births refused in a row for what they hold
   * (LIMITS.sparkplugRefusedBirthsBeforeBackoff), and how long past a hold-off nothing refused
   * starts their count again: longer than any hold-off, so an edge node still in that loop would
   * have been asked and refused again meanwhile; a message taken between two refusals does not. */
  sparkplugRebirthAfterBoundMs: 300_000,
  /** milliseconds. How long the local MQTT input keeps each of an edge node's previous Sparkplug
   * sessions (LIMITS.sparkplugPreviousSessionsPerNode: the ones new NBIRTHs or NDEATHs ended), to read in it what the edge node sends again when
   * it is back: a publish the queue refused, one never read behind it, a duplicate whose PUBACK was
   * lost (sparkplug/resend.ts). Its MQTT client keeps what was not acknowledged for as long as it
   * runs and sends it on its next connection, however late: after a link down for hours, a window
   * of minutes refused it (not born) and acknowledged it unstored. A day covers a field device's
   * outage of a night; what comes later is refused. Nothing to bound here: its definitions count
   * against sparkplugDefinitionsMaxBytes, and a current birth that needs their room drops the oldest. */
  sparkplugResendWindowMs: 24 * 3_600_000,
  /** milliseconds. Default of FIELD_SPARKPLUG_REORDER_TIMEOUT_MS: how long a Sparkplug message that
   * arrived ahead of its seq is held for the missing ones before a rebirth is requested (Sparkplug
   * 3.0.0 §5.9 "Reorder Timeout": "as little as a couple of seconds" in typical environments). */
  sparkplugReorderTimeoutMs: 2_000,
  /** milliseconds. The window of LIMITS.sparkplugLogMaxPerWindow. */
  sparkplugLogWindowMs: 60_000,
  /** milliseconds. The window of LIMITS.fieldGatewayLogMaxPerWindow. */
  fieldGatewayLogWindowMs: 60_000,
  /** milliseconds. The window of LIMITS.fieldCommandLogMaxPerWindow. */
  fieldCommandLogWindowMs: 60_000,
  /** milliseconds. At an orderly stop, the field client sends SIGTERM to the process group of each
   * exec command still running, and SIGKILL this long after to what is left of it; it waits for their
   * answers (journaled and queued) up to twice this. A program left running after its client stopped
   * carried on unseen, and its command was answered as though it had failed. The device's compose
   * file gives its stop 30 s before Docker's SIGKILL (stop_grace_period; the default, 10 s, is less
   * than these waits and the rest of the client's stop). A start
   * after a SIGKILL gives the programs that client left running the same grace (command-orphans.ts). */
  fieldCommandStopGraceMs: 5_000,
  /** milliseconds. How often a start looks whether the process group of a program its killed
   * predecessor left running has ended, while it gives it that grace (command-orphans.ts): a program
   * that ends on SIGTERM is seen gone within this, and the client's start waits no longer. */
  fieldCommandOrphanPollMs: 50,
  /** milliseconds. A `#floor` or issuedAt of the field client's command journal further than this
   * past the device's clock at its start, or past the journal's last write (mtime) when that is later
   * (a clock that reads behind), is damage (a digit flipped or added on the disk), not
   * believed: a command issued that far ahead is refused as FIELD_COMMAND_FUTURE long before (the
   * clock skew allowed is minutes), and a floor believed there refused every new command as a replay. */
  fieldCommandJournalAheadMaxMs: 24 * 3_600_000,
  /** epoch milliseconds (2026-01-01). A device clock before this is not set yet (a device without a
   * real-time clock boots in 1970 until NTP sets it): the command journal's values are not judged
   * against it (fieldCommandJournalAheadMaxMs), as every one would look far ahead, unless the
   * journal's last write (its mtime) reads later than this. */
  fieldClockPlausibleMinMs: Date.UTC(2026, 0, 1),
  /** milliseconds. The window of LIMITS.gatewayRefusalLogMaxPerWindow and LIMITS.gatewayUpgradeRefusalLogMaxPerWindow. */
  gatewayRefusalLogWindowMs: 60_000,
  /** milliseconds the gateway stops reading a device that went past its rate limit (after the one
   * GATEWAY_RATE_LIMITED answer): its frames wait in its TCP connection meanwhile, rather than each
   * being read, parsed and refused. A device that keeps to its limits never meets it. */
  gatewayRateLimitedPauseMs: 500,
  /** milliseconds. One connection of a device's budget (LIMITS.gatewayDeviceConnectsBurst) comes back
   * this long after each: a device may open 20 a minute for as long as it likes, one every 3 s.
   * A field client's back-off never comes near it but on a link that drops every few seconds. */
  gatewayDeviceConnectRefillMs: 3_000,
  /** milliseconds. Longest pause (TIMINGS.transientRewindMs doubled after each transient error that
   * was followed by no progress, with jitter) before the field client sends again after a transient
   * error frame; the pause starts over at base once the gateway acks something. A gateway answering
   * every frame with GATEWAY_RATE_LIMITED gets the window again every half minute at most, not every
   * second. */
  transientRewindMaxMs: 30_000,
  /** milliseconds a connection to the gateway must stay open before the reconnect backoff starts
   * over. Reset at the open itself, a gateway that welcomes and closes at once would keep the delay
   * at its first step: an mTLS handshake and a resend of the window every fraction of a second. */
  gatewayHealthyAfterMs: 30_000,
  /** milliseconds. With several GATEWAY_URLs, the field client leaves a gateway that has answered
   * GATEWAY_BROKER_UNAVAILABLE for this long without taking anything (its DMZ server's broker
   * down, its gateway and Caddy up) for the next URL: no health check in front of the servers sees
   * that, and the device would otherwise wait there for the broker while another server is fine.
   * With one URL, four times this, then it connects again (behind HAProxy: to the next server). */
  fieldBrokerUnavailableMoveMs: 30_000,
  /** milliseconds between two looks of the field client at its CRL file while connected (besides
   * one before each connection attempt): a CRL copied to the device after a --renew-dmz drops a
   * connection to a server it revokes within this, without a restart (server-crl-source.ts). A
   * look is one stat() unless the file changed. */
  fieldCrlCheckMs: 10_000,
  /** milliseconds. The largest POSTGRES_TIMEOUT_MS (postgres-settings.ts): node-postgres gives up a
   * statement past twice it with a Node timer, and a timer past 2^31 - 1 ms fires after 1 ms
   * (TimeoutOverflowWarning): every statement, and past 2^31 - 1 every connection, was given up at
   * once and retried for ever. About 12 days, far past any statement; PostgreSQL's
   * statement_timeout holds it too (its maximum is 2^31 - 1 ms). */
  postgresTimeoutMaxMs: Math.floor((2 ** 31 - 1) / 2),
  /** milliseconds. The largest duration a setting that becomes a Node timer takes (config.ts
   * setting.timerMs): a timer past 2^31 - 1 ms fires after 1 ms (TimeoutOverflowWarning), so an
   * INFLUXDB_TIMEOUT_MS of a month gave every write up at once, and a retry or poll interval that
   * long spun. About 24.8 days. */
  timerMaxMs: 2 ** 31 - 1,
} as const;

export type Timings = typeof TIMINGS;

/** The management API's limits and timings (internal-network/console/manage/, docs/management-api.md). */
export const MANAGE = {
  /** characters of a topic the validator reads; FieldStream's own topics are far shorter */
  topicMaxChars: 1024,
  /** characters of the note a test event may carry to the device */
  testNoteMaxChars: 200,
  /** seconds a test event stays deliverable when the request does not say (5 minutes: a test, not a command to keep) */
  testEventDefaultTtlS: 300,
  /** failed bearer tokens from one source address within authFailureWindowMs; past it, further
   * requests from that address are refused unchecked (MANAGE_THROTTLED) until the window from its
   * first counted failure has passed. Enough for a script with a mistyped token to show its 401s,
   * few enough that guessing a 256-bit token is hopeless anyway and cheap to refuse. */
  authMaxFailures: 20,
  /** milliseconds. The window of authMaxFailures (5 minutes, as the gateway's device tokens). */
  authFailureWindowMs: 5 * 60_000,
  /** source addresses whose failures are remembered; past it the one written longest ago is forgotten */
  authFailureTrackedKeys: 10_000,
} as const;

/**
 * The operator console's limits and timings (internal-network/console/), each with its unit and
 * why. What it keeps in memory is bounded whatever the fleet does, and what it sends to a browser
 * is throttled, so 10,000 devices do not flood one.
 */
export const CONSOLE = {
  /** devices the console tracks; past it, further devices are counted but not shown */
  maxDevices: 100_000,
  /** events, security events and anomalies kept per device for its page (newest) */
  perDeviceRing: 50,
  /** security events and anomalies kept fleet-wide (newest); a browser gets the newest 200 */
  fleetRing: 1000,
  /** anomalies of one device let into the fleet-wide list per minute (its page keeps them all):
   * one device flagged on every field of every reading cannot push the others' off it */
  fleetAnomaliesPerDevicePerMinute: 10,
  /** items of a ring sent in a snapshot */
  snapshotRecent: 200,
  /** milliseconds between two updates sent to one browser: changes in between are coalesced */
  liveFlushMs: 1_000,
  /** milliseconds between looks at the services' /readyz and /metrics for the pipeline page, each
   * sent to every live stream: the event that tells a page its stream is alive, which it takes for
   * dead after 15 s without one (SILENCE_MS, public/api.js; test/unit/console-live.test.ts keeps
   * that several of these) */
  pipelinePollMs: 2_000,
  /** milliseconds a pipeline look (one HTTP request) may take */
  pipelineRequestTimeoutMs: 1_500,
  /** milliseconds between sweeps that mark silent devices stale */
  staleSweepMs: 5_000,
  /** milliseconds. An SSE comment line this often keeps proxies from closing an idle stream. A page
   * never sees it (EventSource dispatches no comment): its liveness is pipelinePollMs's. */
  liveKeepaliveMs: 15_000,
  /** live streams (browser tabs) open at once */
  maxLiveStreams: 200,
  /** live streams one user (one credential, all its logins together) may hold open at once, so one
   * viewer cannot take every slot: per login, logging in again would give ten more */
  maxLiveStreamsPerUser: 10,
  /** bytes. A browser that has not read this much of its stream is too slow: it is disconnected
   * (and reconnects to a fresh snapshot) instead of letting the console's memory grow. */
  liveMaxBufferedBytes: 8 * 1024 * 1024,
  /** device rows of a live stream's snapshot in one event (some 20 KB; 50 KB of rows at the
   * bounds: ids of deviceIdMaxChars, numbers of the most digits), the next event written once the
   * socket has taken it: a snapshot larger than liveMaxBufferedBytes reaches a slow browser,
   * holding one part in memory and the event loop for milliseconds, not the whole fleet's half a
   * second; and a browser hears from its stream at every part, not once 100,000 devices (20 MB)
   * have come, which on a link slower than some 1.3 MB/s took longer than the page waits for a word
   * from its stream (15 s, SILENCE_MS in public/api.js) before it reconnects to a fresh snapshot,
   * for ever. Parts of 1,000 rows (200 KB) did the same to a link under some 13 KB/s: small enough
   * that a part of the largest rows comes within that silence at liveSlowestLinkBytesPerSecond
   * (test/unit/console-live.test.ts measures it). A part also ends before liveSnapshotPartMaxBytes. */
  liveSnapshotRowsPerEvent: 100,
  /** bytes. Most of one event of a live stream's snapshot (a part, with its `event:`/`data:` lines),
   * whatever its rows: a part ends at liveSnapshotRowsPerEvent rows or before the row that would
   * take it past this, whichever comes first (one row at least; a row always fits, its reading
   * bounded by liveRowReadingMaxChars and liveRowValueMaxChars, some 12 KB at most). Counted in rows
   * only, 100 devices whose readings held 256 fields of long names and values were megabytes, which
   * no link near liveSlowestLinkBytesPerSecond took within liveDrainTimeoutMs: such a fleet never
   * loaded, the page reconnecting for ever. Two thirds of what that link carries in that time
   * (40 KiB, 8 s at 5 KiB/s): room for TLS, HTTP and TCP framing and a link that slows for a while.
   * test/unit/console-live.test.ts checks it against the link, the drain timeout and SILENCE_MS. */
  liveSnapshotPartMaxBytes: Math.floor((CONSOLE_LIVE_SLOWEST_LINK_BYTES_PER_SECOND * CONSOLE_LIVE_DRAIN_TIMEOUT_MS * 2) / 3 / 1000),
  /** devices. Of the per-device security counts, those of the devices with most events a live
   * stream's snapshot in parts carries (with how many devices have any): every count, under an
   * attack across a fleet of 100,000 devices, was megabytes in the one event that ends the
   * snapshot, which no link near liveSlowestLinkBytesPerSecond took within liveDrainTimeoutMs.
   * Some 8 KB of the longest ids. At least the 50 the security page lists (public/pages/security.js):
   * the updates after it carry every count that changes, so the page's 50 with most stay right;
   * the rest it reads a page at a time (GET /api/security/devices). */
  liveSecurityTopDevices: 100,
  /** devices. Most per-device security counts one GET /api/security/devices answers (some 40 KB of
   * the longest ids): the page asks for the next ones as it needs them. */
  securityDevicesPageMax: 500,
  /** milliseconds. Least time between two rankings of every per-device security count for GET
   * /api/security/devices (fleet/counts.ts ranked): one is some 50 ms of 110,000 counts, and under an
   * attack a count changes with every event, so ranked at every request a viewer asking again and
   * again held the console's thread. A page gets a ranking this old at most (the live flush's). */
  securityDevicesRankEveryMs: 1_000,
  /** characters. Longest `parts` value GET /api/live takes (the parts a page reads: docs/console.md).
   * A value this console does not know is served as no parts (or its own, for a higher version
   * number), never refused: a page of a later version refused reconnected for ever. Past this it is
   * not a page's version but a malformed request (400). */
  liveQueryPartsMaxChars: 16,
  /** characters. Longest string value of a device row's last reading in the live stream (snapshot and
   * `devices` updates); a longer one is cut here and ends in "…". The fleet page shows each value of
   * the reading cut to 40 characters (fieldsSummary in public/format.js), and a device page reads its
   * whole reading from its own `device` event: values of 64 Ki characters made a row of megabytes. */
  liveRowValueMaxChars: 40,
  /** characters. How much of a device row's last reading the live stream carries, counted as the
   * fleet page writes it out ("name value · name value", values as shown): fields past the one that
   * takes it over this are left out (the row's `lastReading.omitted` says how many). The page
   * shows at most 2,000 (the cell's hover text), and cuts there with "…" as it would the whole
   * reading; 256 fields of 128-character names made a row of tens of KB, over a part's bytes. */
  liveRowReadingMaxChars: 2_000,
  /** bytes. A command in a device page's `device` event (web/live-device.ts) past this has its
   * parameters and result cut to what the page shows of them (120 characters of JSON): each may be
   * LIMITS.stringMaxChars of JSON, some 192 KiB, and the event is within liveSnapshotPartMaxBytes. */
  liveDeviceCommandMaxBytes: 2_048,
  /** bytes. Most JSON text of each list (events, security events, anomalies, commands, numeric field
   * names) in the answer of GET /api/devices/:id: items are kept newest first while the list stays
   * within it, and those past it left out, counted in the answer's `omitted` (the page says "N more
   * not shown"). Each list is bounded in items by its ring (perDeviceRing, perDeviceGatewayReports,
   * deviceCommandsListed), but not in bytes: an event may be a stored point of up to
   * LIMITS.feedMessageMaxBytes and a command's parameters and result hundreds of KB, and the answer,
   * everything held for the device, was tens of megabytes. With the latest reading and health (a
   * stored point each, shown whole) the answer is some 3 MB at most. */
  deviceAnswerListMaxBytes: 256 * 1024,
  /** commands. The newest commands of a device its page lists (asked of the command API, up to
   * LIMITS.commandListMax). */
  deviceCommandsListed: 50,
  /** bytes per second. The slowest link a console page is promised to load its fleet over
   * (docs/console.md): a part of the snapshot (at most liveSnapshotPartMaxBytes) takes
   * it less than the page's silence (SILENCE_MS) and the console's liveDrainTimeoutMs. */
  liveSlowestLinkBytesPerSecond: CONSOLE_LIVE_SLOWEST_LINK_BYTES_PER_SECOND,
  /** milliseconds a live stream waits for its socket to take what it was given: one part of its
   * snapshot (liveSnapshotPartMaxBytes at most, 40 KiB: a browser reading less than some
   * 3.4 KiB/s is let go, and logged), or the end of a stream whose login ended. Past it the
   * connection is destroyed (a browser that is there reconnects to a fresh snapshot): a browser
   * that stopped reading mid-snapshot otherwise held its place, its socket and the snapshot's rows
   * until its login expired (8 h), the bound of liveMaxBufferedBytes being looked at only after the
   * snapshot. Shorter than the page's silence (SILENCE_MS, 15 s): the console, not a page
   * reconnecting for ever, decides a link is too slow; waiting 30 s for parts of 200 KB, it kept
   * links of 7 KB/s whose page had reconnected to a fresh snapshot at every part. */
  liveDrainTimeoutMs: CONSOLE_LIVE_DRAIN_TIMEOUT_MS,
  /** milliseconds. Most a device's own time may run ahead of the console's clock and still order
   * what the device sends: its last reading and health are replaced only by newer ones (a reading
   * drained late from a backlog must not hide the current one), but a stored one dated further
   * ahead than this is replaced by the next whatever its date. Device clocks are the devices' word
   * (the contract allows dates up to 8.64e15): one reading from a clock that jumped to 2100 would
   * otherwise outrank every correct one after it until the console restarted. 5 minutes, the slack
   * a field client allows between its clock and the command API's (FIELD_COMMAND_CLOCK_SKEW_S). */
  deviceClockMaxLeadMs: 5 * 60_000,
  /** sessions kept at once (logged in or not); past it the least recently used are dropped */
  maxSessions: 10_000,
  /** logged-in sessions (logins) one user (one credential) holds at once, whatever the browsers and
   * addresses; a login past it ends that user's own oldest, so one user logging in over and over
   * cannot push the others out of maxSessions. Room for a person's browsers and machines. */
  maxSessionsPerUser: 20,
  /** tokens the command API refused though the console knew them (revoked there), refused by the
   * console too until it restarts; past it the oldest are forgotten */
  refusedTokensMax: 1024,
  /** login attempts per minute from one connection's own address, as a multiple of
   * CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE. Behind CONSOLE_TRUSTED_PROXY the login limit counts the
   * forwarded address, which whoever reaches the proxy's address may choose (Docker's gateway
   * address is every client of the published port): this bounds the attempts through that address
   * whatever X-Forwarded-For says, with room for the operators behind the proxy, who share it.
   * Without a trusted proxy both are the same address, and the smaller limit applies. */
  loginAttemptsPerConnectionFactor: 10,
  /** milliseconds a connection to the console may stay silent before its first request; past it
   * it is closed. Node times out a request once it has begun (headersTimeout, requestTimeout), and a
   * connection between two requests (keepAliveTimeout), but not one that sends nothing at all: each
   * such held a file descriptor for ever, and enough of them left none for the operators. */
  connectionIdleBeforeRequestMs: 10_000,
  /** milliseconds. A connection whose answers have been stuck this long, its client taking none of
   * them, is closed (between one and two of it; shared/stalled-answers.ts): a client that pipelined
   * requests, or asked for a device list of megabytes, and read nothing held its connection, the
   * answers and the requests read meanwhile (a 64 KiB read of pipelined requests is a thousand
   * answers and more) for ever, as no timeout of Node's watches a request once it is in, and the
   * socket's own counts what the client sends. A request the console is still working on (a
   * history read waiting its turn) has nothing stuck; a slow reader takes some at every look. */
  answerStallMs: 30_000,
  /** requests. Most requests pipelined on one connection that wait for the answers before theirs
   * (each is answered in its turn: shared/pipelined-requests.ts) before the console reads no more
   * of it. Browsers never pipeline; answered all at once, a client's thousand pipelined requests
   * for device lists of megabytes, read by nobody, were gigabytes made at once. */
  pipelinedRequestsMaxWaiting: 16,
  /** connections the console holds at once (Node's server.maxConnections); one more is closed as it
   * is accepted. The timeouts bound how long each lasts, not how many there are: without it, enough
   * of them took every file descriptor. Room for every live stream (maxLiveStreams) and the
   * browsers', scripts' and Prometheus's requests beside them. */
  maxConnections: 1_000,
  /** milliseconds a request's headers may take to come in (Node's headersTimeout, 60 s by default);
   * past it the request is answered 408 and its connection closed: a browser sends them at once, and
   * a client trickling them (slowloris) held each connection a minute and a half */
  headersTimeoutMs: 10_000,
  /** milliseconds. How often Node looks for requests past headersTimeoutMs (its default, 30 s, lets
   * them linger that much longer). */
  connectionsCheckMs: 2_000,
  /** seconds a browser keeps to HTTPS for the console once told (Strict-Transport-Security's
   * max-age, sent only when the console is reached over HTTPS): a year */
  hstsMaxAgeS: 31_536_000,
  /** bytes. Largest request body the console reads. */
  bodyMaxBytes: 16 * 1024,
  /** characters. Longest path parameter (a device id, a command id) the console's router matches:
   * past fastify's default (100) a route matched nothing, and an id too long was answered "no such
   * page" (CONSOLE_NOT_FOUND) or "no such endpoint" (MANAGE_NOT_FOUND) instead of being checked by
   * its schema (400). Far above any id; a request's headers (URL included) are bounded anyway. */
  pathParamMaxChars: 2_048,
  /** points a history request returns at most (downsampled by mean to fit) */
  historyMaxPoints: 2_000,
  /** milliseconds. Longest window a history request may ask for (31 days). */
  historyMaxWindowMs: 31 * DAY_MS,
  /** epoch milliseconds. Latest `from`/`to` of a history request: the end of year 9999, far inside
   * the largest JavaScript date (8.64e15 ms), so the stores' date arithmetic (a day either side,
   * ISO dates, InfluxQL and SQL times) never meets an invalid date. */
  historyMaxTimeMs: Date.UTC(9999, 11, 31, 23, 59, 59, 999),
  /** history reads a console runs at once (each may scan a month of the store), and how many more
   * wait for one of them; past both, CONSOLE_HISTORY_BUSY. A device page asks one per numeric field. */
  historyMaxConcurrent: 4,
  historyMaxQueued: 16,
  /** history reads one user (one credential, whatever its sessions) may have running or waiting at
   * once; past it CONSOLE_HISTORY_BUSY, so one user asking over and over leaves room for the others.
   * A page asks two at a time (public/charts.js); HTTP/1.1 browsers open six connections. */
  historyMaxPerUser: 6,
  /** points of the console's own (device states, anomalies) waiting for the database; past it the
   * oldest are dropped and counted (they are observations, not device data) */
  ownPointsMaxQueued: 50_000,
  /** readings waiting to be scored for anomalies; past it readings are skipped and counted, never
   * slowing what feeds them */
  anomalyQueueMax: 200_000,
  /** values. Most numeric values (fields of the readings) waiting to be scored, all readings
   * together; past it readings are skipped and counted as past anomalyQueueMax. A reading may hold
   * LIMITS.readingMaxFields (256) values: anomalyQueueMax of those were some 1.25 GB of heap, past
   * the console's container (768 MiB), where readings of a few fields are some 40 MB. 2,000,000 is
   * anomalyQueueMax readings of 10 fields, some 50 MB of readings of 256 (test/unit/anomaly.test.ts). */
  anomalyQueueMaxValues: 2_000_000,
  /** log lines. Most the console writes per TIMINGS.floodLogIntervalMs about readings its anomaly
   * scoring failed for (none is known to: a fault of its own); those left out are counted in the next. */
  anomalyFailureLogMaxPerWindow: 5,
  /** milliseconds. Most one turn of anomaly scoring holds the event loop (also at most 500
   * readings a turn): a forest grown costs some 3.5 ms, and after a restart each restored device
   * grows its own at its first row, 500 of them a turn held the console's pages for 1.75 s. */
  anomalyTurnMaxMs: 20,
  /** milliseconds between saves of the anomaly detectors' state (CONSOLE_STATE_DIR; also saved when
   * the console stops): what a kill loses is at most this much learning. The forest takes a row per
   * 10 minutes of a device's readings (forestSampleIntervalMs), so a save per row's worth. */
  anomalyStateSaveMs: 10 * 60_000,
  /** bytes. Longest line of the saved anomaly state read back: a device's line at the parameters'
   * maxima (256 fields of 4,096 values, a buffer of 65,536 rows of 64 fields) is about 59 MB in
   * base64; a damaged file without line breaks is not held whole. */
  anomalyStateLineMaxBytes: 64 * 1024 * 1024,
  /** bytes. The saved anomaly state is written about this much at a time (some 50 devices of 3 or 4
   * fields), the console serving between the writes. */
  anomalyStateWriteBytes: 1024 * 1024,
  /** devices tracked that are not in the registry but sent data the distributor verified and stored
   * (its registry saw the key before the console's did, or it stores unsigned data): their own
   * bound, so that they can never take the room of registered devices (maxDevices) */
  maxUnregisteredDevices: 10_000,
  /** ids with no row yet whose last presence is kept, to be applied when the registry lists them (a
   * device registered a moment before it connected: its gateway publishes its presence once, before
   * the console's next look at the registry); past it the presence kept longest ago is forgotten.
   * Bounded since the ids are the DMZ's word: with DISTRIBUTOR_REQUIRE_SIGNATURES=false the
   * distributor stores presences of any id. Some 300 bytes each. */
  maxPendingPresences: 10_000,
  /** milliseconds such a presence is kept: the console looks at its registry every staleSweepMs, but
   * its copy of the keys' folder may lag the distributor's (a Kubernetes Secret reaches each pod on
   * its own, after the kubelet's sync period, a minute by default, and its cache's delay) */
  pendingPresenceMaxAgeMs: 5 * 60_000,
  /** milliseconds. At its start the console reads each device's and gateway's last presence back
   * from the store (fleet/last-presences.ts): the stored feed is not retained, and a gateway publishes
   * a device's presence when it connects and then only once a day (TIMINGS.presenceRefreshMs, at most
   * presenceRefreshCheckMs late). Within this window, then: a device whose last presence is older has
   * had a reminder since if it were still connected. An hour's margin for a gateway that was away
   * from its broker (it publishes them all again when it is back). */
  lastPresenceWindowMs: TIMINGS.presenceRefreshMs + TIMINGS.presenceRefreshCheckMs + 3_600_000,
  /** (device, gateway) pairs whose last presence is read at start: every device tracked
   * (maxDevices), with room for the devices that moved between DMZ servers (one pair per server
   * they used in the window) and for ids not in the registry. A store holding more pairs in the
   * window than this (ids a DMZ invented, with DISTRIBUTOR_REQUIRE_SIGNATURES=false) has the
   * registered devices' pairs read first (history/presences.ts knownFirst): it is the other ids'
   * that are left out. */
  lastPresenceMaxPairs: 120_000,
  /** device ids per InfluxQL statement when the console reads the registered devices' last presences
   * by id (console/history/influxql.ts: when the store holds more pairs than lastPresenceMaxPairs).
   * The statement goes in the URL of a GET: 200 ids of at most 64 characters make about 16 KiB,
   * well within what an HTTP server takes of a request line (Go's, InfluxDB's, 1 MiB with the headers). */
  lastPresenceIdsPerQuery: 200,
  /** milliseconds. How much later than the day of its file a presence's time may be in the local
   * store, whose files are by the day of the write (the console reads them newest first and stops
   * early: history/local.ts). The distributor dates a presence no later than its arrival, which is
   * before the write: this is for its clock stepped back in between. */
  lastPresenceWriteSlackMs: 60_000,
  /** ids not in the registry whose last presence read at start is kept (as pendingPresences), in
   * case verified data gives them a row; the others of them are left out */
  lastPresenceMaxUnregistered: 1_000,
  /** gateways whose last statuses are read at start */
  lastPresenceMaxGateways: 1_000,
  /** gateways whose last end (a will, a clean stop, a restart: console/fleet/gateway-ends.ts) is kept, to
   * take offline a device presence through one arriving after it though older (the last presences
   * read at start, the feed running meanwhile); past it the gateway that ended longest ago is
   * forgotten. Bounded since gateway ids are the DMZ's word. */
  maxGatewayEnds: 1_000,
  /** milliseconds the console's start waits for that read (a database's is bounded by its own
   * timeout; the local store's reads the window's day files newest first, at worst every one:
   * history/local.ts): past it the console
   * starts, and the presences are applied when the read ends, the feed's newer ones winning */
  lastPresenceStartWaitMs: 15_000,
  /** milliseconds. Once the console's connection to the broker is back after a cut, the presences
   * dated from this long before the cut on are read back from the store (console.ts): one dated just
   * before it (the distributor dates a presence at its arrival, then writes it, then seals it into the
   * feed) may have been on its way when the connection went. */
  feedCutPresenceMarginMs: 60_000,
  /** security reports of the DMZ's gateways (source=gateway, their word) kept fleet-wide (newest),
   * apart from the distributor's own findings (fleetRing), which they can never push out */
  gatewayReportsRing: 1000,
  /** gateway security reports kept per device for its page (newest), apart from perDeviceRing: a
   * report already counts many refusals, so fewer are kept */
  perDeviceGatewayReports: 20,
  /** entries (one per security event) of the log of changed security counts before it is
   * compacted; it is compacted whenever it also holds more than twice the counts it covers, so it
   * stays within this or twice the devices and reasons counted */
  securityCountLogMin: 4_096,
} as const;
