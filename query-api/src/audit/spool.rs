//! The audit spool: where audit events wait, on disk, while NATS cannot take them.
//!
//! Each instance claims its own slot `AUDIT_SPOOL_DIR/instance-N` with an exclusive file lock
//! (two processes configured with one directory still never share a slot, and the spool a
//! crashed instance left behind is picked up by the next one to take its slot). In a slot,
//! segment files `{first_seq}.spool` hold one `{seq} {json}` line per event, in order, and
//! `acked` holds the highest sequence JetStream has acknowledged. Delivery reads from the first
//! unacknowledged line, and a fully acknowledged segment is deleted. So a restart never resends
//! what was acknowledged, however long ago: the acknowledgement is tracked here, not left to
//! JetStream's duplicate window (which only covers the last batch in flight when NATS failed).
//!
//! The spool is bounded (`max_bytes`): beyond it new events are dropped, loudly (error log and
//! the `audit_dropped_total{reason="spool_full"}` metric).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::AuditEvent;

const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
const MAX_SLOTS: usize = 256;

struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
}

pub struct Spool {
    dir: PathBuf,
    _lock: File,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    /// The sequence the next appended event gets.
    next_seq: u64,
    /// Every sequence up to here is delivered.
    acked: u64,
    /// Where the first unacknowledged line starts: (segment first_seq, byte offset, its seq).
    read_from: Option<(u64, u64, u64)>,
    /// From the last `peek`: each returned seq and the offset after its line.
    peeked: Vec<(u64, u64, u64)>,
    dropped: u64,
}

impl Spool {
    /// Opens (or creates) a free slot under `root`.
    pub fn open(root: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(root)?;
        for n in 0..MAX_SLOTS {
            let dir = root.join(format!("instance-{n}"));
            std::fs::create_dir_all(&dir)?;
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join("lock"))?;
            match lock.try_lock() {
                Ok(()) => return Spool::open_slot(dir, lock, max_bytes),
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "every audit spool slot under {} is taken",
            root.display()
        )))
    }

    fn open_slot(dir: PathBuf, lock: File, max_bytes: u64) -> std::io::Result<Spool> {
        let acked = std::fs::read_to_string(dir.join("acked"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut firsts: Vec<u64> = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".spool")?.parse().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        for first_seq in firsts {
            let path = dir.join(format!("{first_seq:020}.spool"));
            let bytes = std::fs::metadata(&path)?.len();
            segments.push_back(Segment {
                first_seq,
                path,
                bytes,
            });
        }
        let mut spool = Spool {
            dir,
            _lock: lock,
            max_bytes,
            segments,
            writer: None,
            next_seq: acked + 1,
            acked,
            read_from: None,
            peeked: Vec::new(),
            dropped: 0,
        };
        // The last complete line of the last segment says where numbering goes on. A line cut
        // short by a crash is ignored by readers (it does not parse), so it is harmless.
        if let Some(last) = spool.segments.back() {
            let mut last_seq = None;
            for line in BufReader::new(File::open(&last.path)?).lines() {
                if let Some((seq, _)) = line.ok().as_deref().and_then(parse_line) {
                    last_seq = Some(seq);
                }
            }
            spool.next_seq = spool
                .next_seq
                .max(last_seq.map_or(last.first_seq, |s| s + 1));
        }
        spool.drop_delivered_segments();
        spool.report();
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The highest delivered sequence.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The sequence the next appended event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Events waiting for delivery.
    pub fn pending(&self) -> u64 {
        self.next_seq - 1 - self.acked
    }

    fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Appends `events` in order; returns how many were dropped because the spool is full.
    pub fn append(&mut self, events: &[AuditEvent]) -> std::io::Result<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut buf = Vec::with_capacity(events.len() * 320);
        let mut dropped = 0;
        let mut total = self.bytes();
        for event in events {
            let json = serde_json::to_vec(event).map_err(std::io::Error::other)?;
            let line_len = json.len() as u64 + 22;
            if total + line_len > self.max_bytes {
                dropped += 1;
                continue;
            }
            self.rotate_if_needed()?;
            let seq = self.next_seq;
            self.next_seq += 1;
            let start = buf.len();
            write!(buf, "{seq} ")?;
            buf.extend_from_slice(&json);
            buf.push(b'\n');
            total += (buf.len() - start) as u64;
            if let Some(seg) = self.segments.back_mut() {
                seg.bytes += (buf.len() - start) as u64;
            }
            // Flush a segment's share before the next one starts.
            if self
                .segments
                .back()
                .is_some_and(|s| s.bytes >= SEGMENT_BYTES)
            {
                self.write_out(&mut buf)?;
            }
        }
        self.write_out(&mut buf)?;
        if dropped > 0 {
            self.dropped += dropped as u64;
            metrics::counter!("audit_dropped_total", "reason" => "spool_full")
                .increment(dropped as u64);
            tracing::error!(
                dropped,
                dropped_total = self.dropped,
                max_bytes = self.max_bytes,
                spool = %self.dir.display(),
                "AUDIT SPOOL FULL: audit events are being dropped"
            );
        }
        self.report();
        Ok(dropped)
    }

    fn write_out(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let writer = match &mut self.writer {
            Some(w) => w,
            None => {
                let path = match self.segments.back() {
                    Some(s) => s.path.clone(),
                    None => return Err(std::io::Error::other("no spool segment to write")),
                };
                self.writer
                    .insert(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        writer.write_all(buf)?;
        buf.clear();
        Ok(())
    }

    /// Starts a new segment when the last one is full, or there is none.
    fn rotate_if_needed(&mut self) -> std::io::Result<()> {
        let need_new = match self.segments.back() {
            None => true,
            Some(s) => s.bytes >= SEGMENT_BYTES,
        };
        if need_new {
            self.writer = None;
            let first_seq = self.next_seq;
            let path = self.dir.join(format!("{first_seq:020}.spool"));
            File::create(&path)?;
            self.segments.push_back(Segment {
                first_seq,
                path,
                bytes: 0,
            });
        }
        Ok(())
    }

    /// Up to `max` of the oldest undelivered events, in order, with their sequence numbers.
    pub fn peek(&mut self, max: usize) -> std::io::Result<Vec<(u64, AuditEvent)>> {
        self.peeked.clear();
        let mut out = Vec::new();
        let resume = self.read_from.filter(|&(seg, _, seq)| {
            seq == self.acked + 1 && self.segments.iter().any(|s| s.first_seq == seg)
        });
        let (mut seg_first, mut offset) = match (resume, self.segments.front()) {
            (Some((seg, offset, _)), _) => (seg, offset),
            (None, Some(s)) => (s.first_seq, 0),
            (None, None) => return Ok(out),
        };
        'segments: while out.len() < max {
            let Some(seg) = self.segments.iter().find(|s| s.first_seq == seg_first) else {
                break;
            };
            let mut file = File::open(&seg.path)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut reader = BufReader::new(file);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line)?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                offset += n as u64;
                let Some((seq, event)) = parse_line(line.trim_end()) else {
                    continue;
                };
                if seq <= self.acked {
                    continue;
                }
                self.peeked.push((seq, seg_first, offset));
                out.push((seq, event));
                if out.len() >= max {
                    break 'segments;
                }
            }
            // On to the next segment, if there is one.
            match self.segments.iter().find(|s| s.first_seq > seg_first) {
                Some(next) => {
                    seg_first = next.first_seq;
                    offset = 0;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Everything up to and including `seq` is delivered.
    pub fn ack(&mut self, seq: u64) -> std::io::Result<()> {
        if seq <= self.acked {
            return Ok(());
        }
        if let Some(&(_, seg, offset)) = self.peeked.iter().find(|(s, _, _)| *s == seq) {
            self.read_from = Some((seg, offset, seq + 1));
        } else {
            self.read_from = None;
        }
        self.acked = seq;
        let tmp = self.dir.join("acked.tmp");
        std::fs::write(&tmp, seq.to_string())?;
        std::fs::rename(&tmp, self.dir.join("acked"))?;
        self.drop_delivered_segments();
        self.report();
        Ok(())
    }

    /// Deletes segments whose every event is acknowledged (never the one being appended to,
    /// unless it is fully delivered too, in which case the next append starts a new one).
    fn drop_delivered_segments(&mut self) {
        while let Some(first) = self.segments.front() {
            let last_seq = match self.segments.get(1) {
                Some(next) => next.first_seq - 1,
                None => self.next_seq - 1,
            };
            if last_seq > self.acked || (self.segments.len() == 1 && first.bytes == 0) {
                break;
            }
            let gone = self.segments.pop_front().map(|s| s.path);
            if self.segments.is_empty() {
                self.writer = None;
                self.read_from = None;
            }
            if let Some(path) = gone {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn report(&self) {
        metrics::gauge!("audit_spool_depth").set(self.pending() as f64);
        metrics::gauge!("audit_spool_bytes").set(self.bytes() as f64);
    }
}

fn parse_line(line: &str) -> Option<(u64, AuditEvent)> {
    let (seq, json) = line.split_once(' ')?;
    Some((seq.parse().ok()?, serde_json::from_str(json).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Format, Outcome};

    fn event(n: u32) -> AuditEvent {
        AuditEvent::new(
            Outcome::NotFound,
            Format::Json,
            std::net::IpAddr::from([10, 0, 0, 1]),
            chrono::Utc::now(),
        )
        .user_agent(Some(&format!("agent-{n}")))
    }

    fn agents(batch: &[(u64, AuditEvent)]) -> Vec<String> {
        batch
            .iter()
            .map(|(_, e)| e.user_agent.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn delivers_in_order_once_across_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let mut spool = Spool::open(dir.path(), 1 << 30).expect("open");
            let events: Vec<_> = (0..10).map(event).collect();
            spool.append(&events).expect("append");
            let batch = spool.peek(4).expect("peek");
            assert_eq!(agents(&batch), ["agent-0", "agent-1", "agent-2", "agent-3"]);
            spool.ack(batch[3].0).expect("ack");
            assert_eq!(spool.pending(), 6);
        }
        let mut spool = Spool::open(dir.path(), 1 << 30).expect("reopen");
        assert_eq!(spool.pending(), 6);
        spool.append(&[event(10)]).expect("append");
        let batch = spool.peek(100).expect("peek");
        assert_eq!(batch.len(), 7);
        assert_eq!(agents(&batch)[0], "agent-4");
        assert_eq!(agents(&batch)[6], "agent-10");
        spool.ack(batch[6].0).expect("ack");
        assert_eq!(spool.pending(), 0);
        assert!(spool.peek(10).expect("peek").is_empty());
    }

    #[test]
    fn a_second_opener_gets_its_own_slot_and_a_full_spool_drops() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = Spool::open(dir.path(), 2_000).expect("a");
        let b = Spool::open(dir.path(), 2_000).expect("b");
        assert_ne!(a.dir(), b.dir());
        let events: Vec<_> = (0..20).map(event).collect();
        let dropped = a.append(&events).expect("append");
        assert!(dropped > 0 && dropped < 20, "{dropped}");
        assert_eq!(a.pending() as usize, 20 - dropped);
    }
}
