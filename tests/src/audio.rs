//! Audio files of a known length, made in the test itself: WAV (PCM) and FLAC.
//!
//! No encoder is installed on our machines, so FLAC is written here: verbatim subframes, which
//! any decoder must read, with the frame CRCs a strict decoder checks. 16-bit mono, a sine tone.

/// `seconds` of a 440 Hz tone as 16-bit mono samples at `rate`.
pub fn tone(rate: u32, frames: u64) -> Vec<i16> {
    (0..frames)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            ((t * 440.0 * std::f64::consts::TAU).sin() * 12_000.0) as i16
        })
        .collect()
}

/// A RIFF/WAVE file, PCM 16-bit mono.
pub fn wav(rate: u32, samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A RIFF/WAVE file, PCM 16-bit, whose header says `rate` and `channels` whatever they are
/// (0 Hz, 33 channels...), with `frames` frames of silence: for the files a hostile client
/// sends.
pub fn wav_declaring(rate: u32, channels: u16, frames: u32) -> Vec<u8> {
    let block_align = channels.wrapping_mul(2);
    let data_len = frames.saturating_mul(u32::from(block_align).max(2));
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&rate.wrapping_mul(u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.resize(out.len() + data_len as usize, 0);
    out
}

/// A WAV tone lasting `millis` at 44.1 kHz.
pub fn wav_tone_ms(millis: u64) -> Vec<u8> {
    wav(44_100, &tone(44_100, 44_100 * millis / 1000))
}

const FLAC_BLOCK: usize = 4096;

/// A FLAC file, 16-bit mono at `rate` (one of the rates FLAC frame headers can name).
pub fn flac(rate: u32, samples: &[i16]) -> Vec<u8> {
    let rate_code: u8 = match rate {
        8_000 => 0b0100,
        16_000 => 0b0101,
        22_050 => 0b0110,
        24_000 => 0b0111,
        32_000 => 0b1000,
        44_100 => 0b1001,
        48_000 => 0b1010,
        96_000 => 0b1011,
        other => panic!("no FLAC frame-header code for {other} Hz"),
    };
    let mut out = b"fLaC".to_vec();
    // STREAMINFO, the last (only) metadata block: flag 1, type 0, length 34.
    out.extend_from_slice(&[0x80, 0, 0, 34]);
    let mut info = BitWriter::default();
    info.put(FLAC_BLOCK as u64, 16); // min block size
    info.put(FLAC_BLOCK as u64, 16); // max block size
    info.put(0, 24); // min frame size: unknown
    info.put(0, 24); // max frame size: unknown
    info.put(u64::from(rate), 20);
    info.put(0, 3); // channels - 1
    info.put(15, 5); // bits per sample - 1
    info.put(samples.len() as u64, 36);
    info.put(0, 64); // MD5: unknown
    info.put(0, 64);
    out.extend_from_slice(&info.bytes);

    for (number, block) in samples.chunks(FLAC_BLOCK).enumerate() {
        let mut frame = vec![0xFF, 0xF8]; // sync, fixed block size
        frame.push(0b0111_0000 | rate_code); // block size: 16 bits at the end of the header
        frame.push(0b0000_1000); // mono, 16 bits per sample
        frame.extend_from_slice(&utf8_number(number as u64));
        frame.extend_from_slice(&((block.len() - 1) as u16).to_be_bytes());
        frame.push(crc8(&frame));
        frame.push(0b0000_0010); // verbatim subframe, no wasted bits
        for s in block {
            frame.extend_from_slice(&s.to_be_bytes());
        }
        frame.extend_from_slice(&crc16(&frame).to_be_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

/// A FLAC tone lasting `millis` at 44.1 kHz.
pub fn flac_tone_ms(millis: u64) -> Vec<u8> {
    flac(44_100, &tone(44_100, 44_100 * millis / 1000))
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u32,
}

impl BitWriter {
    fn put(&mut self, value: u64, bits: u32) {
        for i in (0..bits).rev() {
            if self.used & 7 == 0 {
                self.bytes.push(0);
            }
            if (value >> i) & 1 == 1 {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 0x80 >> (self.used % 8);
            }
            self.used += 1;
        }
    }
}

/// FLAC's frame number coding (UTF-8's scheme, extended to 36 bits).
fn utf8_number(n: u64) -> Vec<u8> {
    if n < 0x80 {
        return vec![n as u8];
    }
    let mut continuation = Vec::new();
    let mut rest = n;
    let mut prefix_room = 6u32; // payload bits the first byte can hold with one continuation
    while rest >= (1 << prefix_room) {
        continuation.push(0x80 | (rest & 0x3F) as u8);
        rest >>= 6;
        prefix_room -= 1;
    }
    let count = continuation.len() as u32 + 1;
    let lead_mask: u8 = !(0xFFu8 >> count);
    let mut out = vec![lead_mask | rest as u8];
    out.extend(continuation.into_iter().rev());
    out
}

fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_numbers_use_utf8_coding() {
        assert_eq!(utf8_number(5), vec![5]);
        assert_eq!(utf8_number(0x80), vec![0xC2, 0x80]);
        assert_eq!(utf8_number(0x7FF), vec![0xDF, 0xBF]);
        assert_eq!(utf8_number(0x800), vec![0xE0, 0xA0, 0x80]);
    }

    #[test]
    fn crcs_match_known_values() {
        // CRC-8/ATM-less-init (poly 0x07) and CRC-16/UMTS (poly 0x8005) of "123456789".
        assert_eq!(crc8(b"123456789"), 0xF4);
        assert_eq!(crc16(b"123456789"), 0xFEE8);
    }
}
