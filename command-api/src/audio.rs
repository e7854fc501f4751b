//! Measuring uploaded audio: the duration a track shows is the one its bytes decode to, never a
//! number the client sent.
//!
//! Every packet is decoded and its frames counted, because MP3 and OGG/Vorbis files need not say
//! how long they are (and may say it wrongly). Gapless trimming is on, so an MP3's encoder delay
//! and padding are not counted. This is CPU work on a whole file: callers run it on a blocking
//! thread.

use std::io::Read;
use std::path::Path;

use symphonia::core::codecs::{
    DecoderOptions, CODEC_TYPE_FLAC, CODEC_TYPE_MP1, CODEC_TYPE_MP2, CODEC_TYPE_MP3,
    CODEC_TYPE_NULL, CODEC_TYPE_VORBIS,
};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// The most frames of encoder padding a container's declared length may trim from what decodes
/// (Vorbis's largest block).
const MAX_END_PADDING: u64 = 8192;

/// What decoding found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measured {
    pub duration_ms: u64,
    /// `audio/wav`, `audio/flac`, `audio/mpeg` or `audio/ogg`, from the detected format.
    pub content_type: &'static str,
}

/// Why a file is not audio we accept. The text is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAudio(pub String);

/// Sample rates we measure (CONTRACT: "Hostile clients"); outside them a duration means
/// nothing (a 1 Hz file would last a day per 86,400 samples).
pub const SAMPLE_RATES_HZ: std::ops::RangeInclusive<u32> = 8_000..=384_000;
/// Channel counts we measure.
pub const CHANNELS: std::ops::RangeInclusive<usize> = 1..=32;

/// Refuses a stream whose declared parameters are outside what we measure; `None` is not
/// known yet (checked again on the decoded audio).
fn check_stream(rate: Option<u32>, channels: Option<usize>) -> Result<(), NotAudio> {
    if let Some(rate) = rate.filter(|r| !SAMPLE_RATES_HZ.contains(r)) {
        return Err(NotAudio(format!(
            "has a sample rate of {rate} Hz; {}–{} Hz is accepted",
            SAMPLE_RATES_HZ.start(),
            SAMPLE_RATES_HZ.end()
        )));
    }
    if let Some(channels) = channels.filter(|c| !CHANNELS.contains(c)) {
        return Err(NotAudio(format!(
            "has {channels} channels; {}–{} are accepted",
            CHANNELS.start(),
            CHANNELS.end()
        )));
    }
    Ok(())
}

/// The sample rate and channel count of a RIFF/WAVE file's `fmt ` chunk, if it has one within
/// its first 64 KiB.
fn wav_format(file: &mut std::fs::File) -> Option<(u32, u16)> {
    let mut head = Vec::with_capacity(4096);
    std::io::Read::take(&mut *file, 64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    // `file` has already given up its first 4 bytes ("RIFF").
    let rest = head.get(4..)?;
    if rest.get(..4)? != b"WAVE" {
        return None;
    }
    let mut at = 4;
    while let Some(chunk) = rest.get(at..at + 8) {
        let size = u32::from_le_bytes(chunk[4..8].try_into().ok()?) as usize;
        if &chunk[..4] == b"fmt " {
            let fmt = rest.get(at + 8..at + 8 + size.min(16))?;
            let channels = u16::from_le_bytes(fmt.get(2..4)?.try_into().ok()?);
            let rate = u32::from_le_bytes(fmt.get(4..8)?.try_into().ok()?);
            return Some((rate, channels));
        }
        // Chunks are padded to an even length.
        at = at
            .checked_add(8)?
            .checked_add(size)?
            .checked_add(size % 2)?;
    }
    None
}

/// Decodes the whole file at `path` and measures it.
pub fn measure(path: &Path) -> Result<Measured, NotAudio> {
    let unreadable = |_| NotAudio("could not be read".to_owned());
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let magic_len = file.read(&mut magic).map_err(unreadable)?;
    // A WAV header is read by hand first: symphonia panics on a sample rate of 0 while it
    // probes, before any of its answers could be checked.
    if &magic[..magic_len] == b"RIFF" {
        if let Some((rate, channels)) = wav_format(&mut file) {
            check_stream(Some(rate), Some(usize::from(channels)))?;
        }
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;

    let not_audio =
        || NotAudio("could not be decoded as WAV, FLAC, MP3 or OGG/Vorbis audio".to_owned());
    let source = MediaSourceStream::new(Box::new(file), Default::default());
    let options = FormatOptions {
        enable_gapless: true,
        ..FormatOptions::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&Hint::new(), source, &options, &MetadataOptions::default())
        .map_err(|_| not_audio())?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(not_audio)?;
    check_stream(
        track.codec_params.sample_rate,
        track.codec_params.channels.map(|c| c.count()),
    )?;
    let track_id = track.id;
    let codec = track.codec_params.codec;
    let declared = (track.codec_params.n_frames, track.codec_params.sample_rate);
    let content_type = match &magic[..magic_len] {
        b"RIFF" => "audio/wav",
        b"fLaC" => "audio/flac",
        b"OggS" if codec == CODEC_TYPE_VORBIS => "audio/ogg",
        _ if codec == CODEC_TYPE_FLAC => "audio/flac",
        _ if [CODEC_TYPE_MP1, CODEC_TYPE_MP2, CODEC_TYPE_MP3].contains(&codec) => "audio/mpeg",
        _ => return Err(not_audio()),
    };
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|_| not_audio())?;

    // Frames per sample rate: a stream may change rate between packets (MP3 can).
    let mut frames_at: Vec<(u32, u64)> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            // A chained stream starts over; we measure the first one, as players do.
            Err(SymphoniaError::ResetRequired) => break,
            Err(_) => return Err(not_audio()),
        };
        if packet.track_id() != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(decoded) => {
                let frames = decoded.frames() as u64;
                let rate = decoded.spec().rate;
                if frames == 0 {
                    continue;
                }
                check_stream(Some(rate), Some(decoded.spec().channels.count()))?;
                match frames_at.iter_mut().find(|(r, _)| *r == rate) {
                    Some((_, n)) => *n += frames,
                    None => frames_at.push((rate, frames)),
                }
            }
            // A damaged packet is skipped, as players do; a file of nothing but damage ends
            // with no frames and is refused below.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(_) => return Err(not_audio()),
        }
    }
    // The container may say where the audio really ends (an Ogg stream's last granule position,
    // an MP3's LAME tag), and the decoder may not have trimmed the encoder's padding after it.
    // That trims at most one block; a declared length further from what decodes is not trusted.
    if let ([(rate, frames)], (Some(declared), Some(declared_rate))) =
        (&mut frames_at[..], declared)
    {
        if *rate == declared_rate && *frames >= declared && *frames - declared <= MAX_END_PADDING {
            *frames = declared;
        }
    }
    let seconds: f64 = frames_at
        .iter()
        .map(|&(rate, frames)| frames as f64 / f64::from(rate))
        .sum();
    let duration_ms = (seconds * 1000.0).round() as u64;
    if duration_ms == 0 {
        return Err(NotAudio("contains no decodable audio".to_owned()));
    }
    Ok(Measured {
        duration_ms,
        content_type,
    })
}
