//! VAST 2/3/4.x parsing (IAB VAST 4.3) with quick-xml, which works in wasm
//! (the Workers runtime has no DOMParser). InLine and Wrapper ads, `<Ad
//! sequence>` pods, multiple creatives, tracking, errors, MediaFiles,
//! UniversalAdId. Wrapper *following* needs the network, so it is the
//! caller's loop: [`VastAd::wrapper_uri`] says where to go next and
//! [`merge_wrapper`] folds a wrapper's tracking into the inline ad.
//!
//! Limits: body size, ads per document, element depth — each with its own
//! error; never a panic on malformed XML.

use crate::ads::pod::{build_pod, PodRequest};
use crate::model::{Pod, PodItem, PodSource, Slate, Tracking};
use quick_xml::events::Event;
use quick_xml::Reader;

pub const MAX_VAST_BYTES: usize = 1024 * 1024;
pub const MAX_ADS: usize = 64;
pub const MAX_DEPTH: usize = 64;

/// VAST error codes we report (VAST 4.3 §2.3.6.3).
pub mod error_code {
    pub const XML_PARSE: u16 = 100;
    pub const SCHEMA: u16 = 101;
    pub const VERSION: u16 = 102;
    pub const WRAPPER_LIMIT: u16 = 302;
    pub const WRAPPER_TIMEOUT: u16 = 301;
    pub const NO_ADS_AFTER_WRAPPER: u16 = 303;
    pub const LINEARITY: u16 = 201;
    pub const DURATION: u16 = 202;
    pub const MEDIA_NOT_FOUND: u16 = 401;
    pub const MEDIA_UNSUPPORTED: u16 = 403;
    pub const UNDEFINED: u16 = 900;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VastError {
    #[error("VAST body is {len} bytes, over the {MAX_VAST_BYTES}-byte limit")]
    TooLarge { len: usize },
    #[error("malformed XML at byte {at}: {msg}")]
    Xml { at: u64, msg: String },
    #[error("root element is <{0}>, not <VAST>")]
    NotVast(String),
    #[error("more than {MAX_ADS} ads")]
    TooManyAds,
    #[error("XML nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

impl VastError {
    pub fn code(&self) -> u16 {
        match self {
            VastError::Xml { .. } | VastError::TooLarge { .. } => error_code::XML_PARSE,
            VastError::NotVast(_) | VastError::TooManyAds | VastError::TooDeep => {
                error_code::SCHEMA
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VastDoc {
    pub version: String,
    pub ads: Vec<VastAd>,
    /// Document-level `<Error>` URLs (no ads).
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VastAd {
    pub id: String,
    pub sequence: Option<u32>,
    pub is_wrapper: bool,
    pub wrapper_uri: Option<String>,
    pub ad_system: String,
    pub impressions: Vec<String>,
    pub errors: Vec<String>,
    pub creatives: Vec<Creative>,
}

impl VastAd {
    pub fn wrapper_uri(&self) -> Option<&str> {
        self.wrapper_uri.as_deref().filter(|_| self.is_wrapper)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Creative {
    pub id: String,
    pub ad_id: String,
    pub universal_ad_id: Option<String>,
    pub duration_s: Option<f64>,
    pub linear: bool,
    pub media_files: Vec<MediaFile>,
    pub tracking: Tracking,
}

/// An attribute from a small vocabulary (`type`, `delivery`, `codec`,
/// `apiFramework`): the usual values are not copied ([`vocabulary`]).
pub type Word = std::borrow::Cow<'static, str>;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaFile {
    pub url: String,
    pub mime: Word,
    pub delivery: Word,
    pub width: u32,
    pub height: u32,
    pub bitrate: u32,
    /// `apiFramework` (VPAID, SIMID…): interactive, never stitched.
    pub api_framework: Word,
    /// RFC 6381 codecs, when the ad server says (`codec`).
    pub codec: Word,
    /// `fileSize` in bytes (VAST 4.1+), 0 when absent.
    pub file_size: u64,
    /// From `<Mezzanine>` (VAST 4): the raw file meant for server-side
    /// conditioning, not for direct playback.
    pub mezzanine: bool,
}

impl MediaFile {
    pub fn is_hls(&self) -> bool {
        let m = self.mime.to_ascii_lowercase();
        m.contains("mpegurl")
            || self
                .url
                .split('?')
                .next()
                .is_some_and(|p| p.ends_with(".m3u8"))
    }
}

/// The elements the parser acts on; everything else is `Other`. A stack
/// of these (Copy, no allocation) replaces a stack of element names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Vast,
    Ad,
    Wrapper,
    Creative,
    Linear,
    MediaFile,
    Tracking,
    Error,
    Impression,
    AdSystem,
    VastAdTagUri,
    Duration,
    UniversalAdId,
    Mezzanine,
    Other,
}

impl Tag {
    /// Elements whose text we read (other text is skipped, not copied).
    fn has_text(self) -> bool {
        matches!(
            self,
            Tag::Error
                | Tag::Impression
                | Tag::AdSystem
                | Tag::VastAdTagUri
                | Tag::Duration
                | Tag::UniversalAdId
                | Tag::MediaFile
                | Tag::Mezzanine
                | Tag::Tracking
        )
    }

    fn of(local: &[u8]) -> Tag {
        match local {
            b"VAST" => Tag::Vast,
            b"Ad" => Tag::Ad,
            b"Wrapper" => Tag::Wrapper,
            b"Creative" => Tag::Creative,
            b"Linear" => Tag::Linear,
            b"MediaFile" => Tag::MediaFile,
            b"Tracking" => Tag::Tracking,
            b"Error" => Tag::Error,
            b"Impression" => Tag::Impression,
            b"AdSystem" => Tag::AdSystem,
            b"VASTAdTagURI" => Tag::VastAdTagUri,
            b"Duration" => Tag::Duration,
            b"UniversalAdId" => Tag::UniversalAdId,
            b"Mezzanine" => Tag::Mezzanine,
            _ => Tag::Other,
        }
    }
}

/// Parse a VAST document.
pub fn parse(xml: &str) -> Result<VastDoc, VastError> {
    if xml.len() > MAX_VAST_BYTES {
        return Err(VastError::TooLarge { len: xml.len() });
    }
    let mut r = Reader::from_str(xml);
    r.config_mut().trim_text(true);
    let mut doc = VastDoc::default();
    // The open elements: a fixed array on the stack (no allocation per
    // document), as deep as the depth limit.
    let mut path = Path::default();
    let mut saw_root = false;
    let mut ad: Option<VastAd> = None;
    let mut creative: Option<Creative> = None;
    let mut media: Option<MediaFile> = None;
    let mut tracking_event: Option<&'static str> = None;
    // Element text arrives in pieces (text, entity references, CDATA);
    // a single piece (the usual case) is borrowed from the input.
    let mut pending = Pending::default();
    let err = |r: &Reader<&[u8]>, e: quick_xml::Error| VastError::Xml {
        at: r.buffer_position(),
        msg: e.to_string(),
    };
    loop {
        let ev = r.read_event().map_err(|e| err(&r, e))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                // The local name by a plain byte loop: names are short,
                // and quick-xml's `local_name` is a memchr call.
                let local = local_name(e.name().into_inner());
                let tag = Tag::of(local);
                if !saw_root {
                    if tag != Tag::Vast {
                        return Err(VastError::NotVast(
                            String::from_utf8_lossy(local).into_owned(),
                        ));
                    }
                    saw_root = true;
                }
                // One pass over the attributes; values unescaped only
                // when they hold a reference.
                match tag {
                    Tag::Vast => for_each_attr(e, |k, v| {
                        if k == b"version" {
                            doc.version = attr_text(xml, v);
                        }
                    }),
                    Tag::Ad => {
                        if doc.ads.len() >= MAX_ADS {
                            return Err(VastError::TooManyAds);
                        }
                        let mut a = VastAd::default();
                        for_each_attr(e, |k, v| match k {
                            b"id" => a.id = attr_text(xml, v),
                            b"sequence" => a.sequence = attr_num(xml, v),
                            _ => {}
                        });
                        ad = Some(a);
                    }
                    Tag::Wrapper => {
                        if let Some(a) = ad.as_mut() {
                            a.is_wrapper = true;
                        }
                    }
                    Tag::Creative => {
                        let mut c = Creative::default();
                        for_each_attr(e, |k, v| match k {
                            b"id" => c.id = attr_text(xml, v),
                            b"adId" | b"AdID" if c.ad_id.is_empty() => c.ad_id = attr_text(xml, v),
                            _ => {}
                        });
                        creative = Some(c);
                    }
                    Tag::Linear => {
                        if let Some(c) = creative.as_mut() {
                            c.linear = true;
                        }
                    }
                    Tag::MediaFile | Tag::Mezzanine => {
                        let mut m = MediaFile {
                            mezzanine: tag == Tag::Mezzanine,
                            ..MediaFile::default()
                        };
                        for_each_attr(e, |k, v| match k {
                            b"type" => m.mime = attr_word(xml, v),
                            b"delivery" => m.delivery = attr_word(xml, v),
                            b"width" => m.width = attr_num(xml, v).unwrap_or(0),
                            b"height" => m.height = attr_num(xml, v).unwrap_or(0),
                            b"bitrate" => m.bitrate = attr_num(xml, v).unwrap_or(0),
                            b"apiFramework" => m.api_framework = attr_word(xml, v),
                            b"codec" => m.codec = attr_word(xml, v),
                            b"fileSize" => m.file_size = attr_num(xml, v).unwrap_or(0),
                            _ => {}
                        });
                        media = Some(m);
                    }
                    Tag::Tracking => {
                        // Only the events we fire; compared without copying.
                        let mut event = None;
                        for_each_attr(e, |k, v| {
                            if event.is_none() && k == b"event" {
                                event = Some(tracking_event_name(v));
                            }
                        });
                        tracking_event = event.flatten();
                    }
                    _ => {}
                }
                pending.clear();
                if !empty {
                    if !path.push(tag) {
                        return Err(VastError::TooDeep);
                    }
                } else {
                    close(tag, &mut doc, &mut ad, &mut creative, &mut media);
                }
            }
            Event::Text(t) if path.leaf().is_some_and(Tag::has_text) => {
                pending.push(utf8(xml, &t));
            }
            Event::GeneralRef(r) if path.leaf().is_some_and(Tag::has_text) => {
                pending.push(std::borrow::Cow::Owned(entity(&utf8(xml, &r))));
            }
            Event::CData(t) if path.leaf().is_some_and(Tag::has_text) => {
                pending.push(utf8(xml, &t))
            }
            Event::End(_) => {
                text(
                    &path,
                    pending.get().trim(),
                    &mut doc,
                    &mut ad,
                    &mut creative,
                    &mut media,
                    &tracking_event,
                );
                pending.clear();
                if let Some(tag) = path.pop() {
                    close(tag, &mut doc, &mut ad, &mut creative, &mut media);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(VastError::NotVast(String::new()));
    }
    Ok(doc)
}

/// Calls `f(local name, raw value)` for each attribute of `e`, in order.
/// Well-formed attributes (`key="v"` / `key='v'`, whitespace around `=`)
/// are split by one byte scan (cheaper than quick-xml's iterator). At the
/// first one quick-xml would reject (no `=`, an unquoted or unclosed
/// value), the rest goes through quick-xml's iterator (without its
/// duplicate check, which allocates per element), skipping what it
/// rejects, exactly as before: its first `n` attributes are the `n`
/// already split, which it reads the same way.
fn for_each_attr(e: &quick_xml::events::BytesStart<'_>, mut f: impl FnMut(&[u8], &[u8])) {
    let mut rest = e.attributes_raw();
    let mut done = 0usize;
    loop {
        let start = rest
            .iter()
            .position(|&b| !is_xml_space(b))
            .unwrap_or(rest.len());
        let Some(at) = rest.get(start..) else {
            return;
        };
        if at.is_empty() {
            return;
        }
        let Some((key, value, after)) = split_attr(at) else {
            break;
        };
        f(local_name(key), value);
        done = done.saturating_add(1);
        rest = after;
    }
    for a in e.attributes().with_checks(false).skip(done).flatten() {
        f(a.key.local_name().as_ref(), &a.value);
    }
}

/// The part of a qualified name after its first `:` (as quick-xml's
/// `local_name`).
fn local_name(k: &[u8]) -> &[u8] {
    match k.iter().position(|&b| b == b':') {
        Some(i) => k.get(i.saturating_add(1)..).unwrap_or(k),
        None => k,
    }
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `key = "value"` at the start of `s` → key, value, the rest after the
/// closing quote.
fn split_attr(s: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    // The key's first byte is never its end (as in quick-xml: `="x"` is a
    // key, not an empty key and a value).
    let key_end = s
        .iter()
        .skip(1)
        .position(|&b| b == b'=' || is_xml_space(b))?
        .checked_add(1)?;
    let (key, rest) = s.split_at_checked(key_end)?;
    let eq = rest.iter().position(|&b| !is_xml_space(b))?;
    let rest = rest.get(eq..)?.strip_prefix(b"=")?;
    let q = rest.iter().position(|&b| !is_xml_space(b))?;
    let rest = rest.get(q..)?;
    let (&quote, rest) = rest.split_first()?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let close = rest.iter().position(|&b| b == quote)?;
    let (value, rest) = rest.split_at_checked(close)?;
    Some((key, value, rest.get(1..)?))
}

/// The stack of open elements, in a fixed array of [`MAX_DEPTH`].
struct Path {
    tags: [Tag; MAX_DEPTH],
    len: usize,
}

impl Default for Path {
    fn default() -> Self {
        Path {
            tags: [Tag::Other; MAX_DEPTH],
            len: 0,
        }
    }
}

impl Path {
    /// Push `tag`; false when the depth limit is reached.
    fn push(&mut self, tag: Tag) -> bool {
        match self.tags.get_mut(self.len) {
            Some(slot) => {
                *slot = tag;
                self.len = self.len.saturating_add(1);
                true
            }
            None => false,
        }
    }

    fn pop(&mut self) -> Option<Tag> {
        self.len = self.len.checked_sub(1)?;
        self.tags.get(self.len).copied()
    }

    fn leaf(&self) -> Option<Tag> {
        self.tags.get(self.len.checked_sub(1)?).copied()
    }

    fn parent(&self) -> Option<Tag> {
        self.tags.get(self.len.checked_sub(2)?).copied()
    }
}

/// An element's text so far: the first piece borrowed from the document,
/// copied into `joined` only when a second piece arrives.
#[derive(Default)]
struct Pending<'a> {
    first: &'a str,
    joined: String,
    is_joined: bool,
}

impl<'a> Pending<'a> {
    fn push(&mut self, piece: std::borrow::Cow<'a, str>) {
        // The text is trimmed when read: whitespace before anything else
        // (the indentation before a CDATA section, in most documents) is
        // dropped rather than joined.
        if !self.is_joined && self.first.is_empty() && piece.trim().is_empty() {
            return;
        }
        if self.is_joined {
            self.joined.push_str(&piece);
        } else if self.first.is_empty() {
            match piece {
                std::borrow::Cow::Borrowed(s) => self.first = s,
                std::borrow::Cow::Owned(s) => {
                    self.joined = s;
                    self.is_joined = true;
                }
            }
        } else {
            self.joined.clear();
            self.joined.push_str(self.first);
            self.joined.push_str(&piece);
            self.is_joined = true;
        }
    }

    fn get(&self) -> &str {
        if self.is_joined {
            &self.joined
        } else {
            self.first
        }
    }

    fn clear(&mut self) {
        self.first = "";
        self.is_joined = false;
    }
}

/// An attribute value as text: borrowed bytes unescaped only when they
/// contain a reference.
fn attr_text(xml: &str, v: &[u8]) -> String {
    attr_str(xml, v).into_owned()
}

/// The values of `type`, `delivery`, `codec` and `apiFramework` that ad
/// servers send over and over (a 3-ad document has a dozen of them): kept
/// as `&'static str`, not allocated per media file.
const VOCABULARY: &[&str] = &[
    "video/mp4",
    "video/webm",
    "video/quicktime",
    "video/mp2t",
    "application/x-mpegURL",
    "application/vnd.apple.mpegurl",
    "application/dash+xml",
    "application/javascript",
    "progressive",
    "streaming",
    "H.264",
    "h264",
    "VPAID",
    "SIMID",
];

/// `v` as a [`Word`]: a [`VOCABULARY`] entry when it is one, else a copy.
pub fn vocabulary(v: &str) -> Word {
    match VOCABULARY.iter().find(|w| **w == v) {
        Some(w) => Word::Borrowed(w),
        None => Word::Owned(v.to_string()),
    }
}

fn attr_word(xml: &str, v: &[u8]) -> Word {
    vocabulary(&attr_str(xml, v))
}

/// A numeric attribute, read without copying its text: plain digits
/// (the usual case) by a byte loop, anything else as before (unescaped,
/// trimmed, `FromStr`).
fn attr_num<T: std::str::FromStr + TryFrom<u64>>(xml: &str, v: &[u8]) -> Option<T> {
    if !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit) {
        let n = v.iter().fold(0u64, |n, &d| {
            n.wrapping_mul(10)
                .wrapping_add(u64::from(d.wrapping_sub(b'0')))
        });
        return T::try_from(n).ok();
    }
    attr_str(xml, v).trim().parse().ok()
}

fn attr_str<'a>(xml: &'a str, v: &[u8]) -> std::borrow::Cow<'a, str> {
    let raw = utf8(xml, v);
    if !raw.contains('&') {
        return raw;
    }
    match quick_xml::escape::unescape(&raw) {
        Ok(std::borrow::Cow::Owned(s)) => std::borrow::Cow::Owned(s),
        _ => raw,
    }
}

/// Bytes of the document as text. The reader hands out slices of `xml`
/// cut at ASCII delimiters, so the slice is found again in `xml` by its
/// address (a bounds and char-boundary check, no UTF-8 re-validation);
/// anything else (never expected) is validated.
fn utf8<'a>(xml: &'a str, v: &[u8]) -> std::borrow::Cow<'a, str> {
    let at = (v.as_ptr() as usize).wrapping_sub(xml.as_ptr() as usize);
    if let Some(s) = at.checked_add(v.len()).and_then(|end| xml.get(at..end)) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(v).into_owned())
}

/// `&name;` → its text (XML's five, and numeric references).
fn entity(name: &str) -> String {
    match name {
        "amp" => "&".into(),
        "lt" => "<".into(),
        "gt" => ">".into(),
        "quot" => "\"".into(),
        "apos" => "'".into(),
        n => n
            .strip_prefix("#x")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .or_else(|| n.strip_prefix('#').and_then(|d| d.parse().ok()))
            .and_then(char::from_u32)
            .map(String::from)
            .unwrap_or_default(),
    }
}

fn close(
    tag: Tag,
    doc: &mut VastDoc,
    ad: &mut Option<VastAd>,
    creative: &mut Option<Creative>,
    media: &mut Option<MediaFile>,
) {
    match tag {
        Tag::Ad => {
            if let Some(a) = ad.take() {
                doc.ads.push(a);
            }
        }
        Tag::Creative => {
            if let (Some(c), Some(a)) = (creative.take(), ad.as_mut()) {
                // Most ads have one creative: four (the default first
                // growth) would be an over-1 KiB request, which costs
                // the allocator a consolidation.
                a.creatives.reserve_exact(1);
                a.creatives.push(c);
            }
        }
        Tag::MediaFile | Tag::Mezzanine => {
            if let (Some(m), Some(c)) = (media.take(), creative.as_mut()) {
                if !m.url.is_empty() {
                    c.media_files.push(m);
                }
            }
        }
        _ => {}
    }
}

fn text(
    path: &Path,
    v: &str,
    doc: &mut VastDoc,
    ad: &mut Option<VastAd>,
    creative: &mut Option<Creative>,
    media: &mut Option<MediaFile>,
    tracking_event: &Option<&'static str>,
) {
    if v.is_empty() {
        return;
    }
    let Some(leaf) = path.leaf() else {
        return;
    };
    let parent = path.parent();
    match (leaf, ad.as_mut()) {
        (Tag::Error, None) => doc.errors.push(v.to_string()),
        (Tag::Error, Some(a)) if parent != Some(Tag::Tracking) => a.errors.push(v.to_string()),
        (Tag::Impression, Some(a)) => a.impressions.push(v.to_string()),
        (Tag::AdSystem, Some(a)) => a.ad_system = v.to_string(),
        (Tag::VastAdTagUri, Some(a)) => a.wrapper_uri = Some(v.to_string()),
        (Tag::Duration, Some(_)) => {
            if let Some(c) = creative.as_mut() {
                c.duration_s = parse_duration(v);
            }
        }
        (Tag::UniversalAdId, Some(_)) => {
            if let Some(c) = creative.as_mut() {
                c.universal_ad_id = Some(v.to_string());
            }
        }
        (Tag::MediaFile | Tag::Mezzanine, Some(_)) => {
            if let Some(m) = media.as_mut() {
                m.url = v.to_string();
            }
        }
        (Tag::Tracking, Some(_)) => {
            if let (Some(c), Some(e)) = (creative.as_mut(), *tracking_event) {
                push_tracking(&mut c.tracking, e, v);
            }
        }
        _ => {}
    }
}

fn tracking_event_name(v: &[u8]) -> Option<&'static str> {
    Some(match v {
        b"start" => "start",
        b"firstQuartile" => "firstQuartile",
        b"midpoint" => "midpoint",
        b"thirdQuartile" => "thirdQuartile",
        b"complete" => "complete",
        _ => return None,
    })
}

fn push_tracking(t: &mut Tracking, event: &str, url: &str) {
    let list = match event {
        "start" => &mut t.start,
        "firstQuartile" => &mut t.first_quartile,
        "midpoint" => &mut t.midpoint,
        "thirdQuartile" => &mut t.third_quartile,
        "complete" => &mut t.complete,
        _ => return,
    };
    list.push(url.to_string());
}

/// `HH:MM:SS(.mmm)` → seconds.
pub fn parse_duration(s: &str) -> Option<f64> {
    let mut parts = s.trim().split(':');
    let h = duration_part(parts.next()?)?;
    let m = duration_part(parts.next()?)?;
    let sec = duration_part(parts.next()?)?;
    if parts.next().is_some() || !(0.0..60.0).contains(&m) || !(0.0..60.0).contains(&sec) {
        return None;
    }
    Some(h * 3600.0 + m * 60.0 + sec)
}

/// One `HH`, `MM` or `SS(.mmm)` field: plain digits (the usual case) by a
/// byte loop, exact as an `f64` at this length; anything else as `f64`
/// text.
fn duration_part(p: &str) -> Option<f64> {
    let b = p.as_bytes();
    if !b.is_empty() && b.len() <= 9 && b.iter().all(u8::is_ascii_digit) {
        let n = b.iter().fold(0u32, |n, &d| {
            n.wrapping_mul(10)
                .wrapping_add(u32::from(d.wrapping_sub(b'0')))
        });
        return Some(f64::from(n));
    }
    p.parse().ok()
}

/// Fold a wrapper's impressions, errors and tracking into the ad it
/// resolved to (VAST 4.3 §2.4.3.4: wrapper tracking fires too). The lists
/// are concatenated here, so a chain of documents each under the limits
/// may make an ad over them: the limits are applied to the merged ad, when
/// its pod is built ([`crate::ads::pod::limit_tracking`]), which also counts
/// what it drops for the pod's reasons.
pub fn merge_wrapper(inline: &mut VastAd, wrapper: &VastAd) {
    inline
        .impressions
        .extend(wrapper.impressions.iter().cloned());
    inline.errors.extend(wrapper.errors.iter().cloned());
    if let Some(wc) = wrapper
        .creatives
        .iter()
        .find(|c| c.linear || !c.tracking.start.is_empty())
    {
        for c in inline.creatives.iter_mut() {
            let t = &mut c.tracking;
            t.start.extend(wc.tracking.start.iter().cloned());
            t.first_quartile
                .extend(wc.tracking.first_quartile.iter().cloned());
            t.midpoint.extend(wc.tracking.midpoint.iter().cloned());
            t.third_quartile
                .extend(wc.tracking.third_quartile.iter().cloned());
            t.complete.extend(wc.tracking.complete.iter().cloned());
        }
    }
}

/// The inline ads of a document in play order: `<Ad sequence>` pod members
/// by sequence first, then stand-alone ads.
pub fn ordered_inline_ads(doc: &VastDoc) -> Vec<&VastAd> {
    let mut ads: Vec<&VastAd> = doc.ads.iter().filter(|a| !a.is_wrapper).collect();
    ads.sort_by_key(|a| a.sequence.unwrap_or(u32::MAX));
    ads
}

/// A pod item for a VAST ad's first linear creative, with its tracking,
/// and renditions from `renditions_for` (the ad library mapping by
/// creative id / UniversalAdId; empty = not conditioned).
pub fn pod_item(
    ad: &VastAd,
    renditions_for: impl FnOnce(&Creative) -> Vec<crate::model::AdRendition>,
) -> Option<PodItem> {
    let renditions = renditions_for(ad.creatives.iter().find(|c| c.linear)?);
    let mut item = into_pod_item(ad.clone())?;
    item.renditions = renditions;
    Some(item)
}

/// [`pod_item`] by value, without renditions: moves the ad's strings.
pub fn into_pod_item(ad: VastAd) -> Option<PodItem> {
    let c = ad.creatives.into_iter().find(|c| c.linear)?;
    let mut tracking = c.tracking;
    tracking.impression = ad.impressions;
    tracking.error = ad.errors;
    Some(PodItem {
        ad_id: if ad.id.is_empty() {
            c.id.clone()
        } else {
            ad.id
        },
        creative_id: if c.id.is_empty() { c.ad_id } else { c.id },
        universal_ad_id: c.universal_ad_id,
        duration_s: c.duration_s.unwrap_or(0.0),
        renditions: Vec::new(),
        tracking,
    })
}

/// Parse result → pod (no library: for the benchmark and for VAST whose
/// creatives are all already conditioned HLS).
pub fn pod_from_vast(
    doc: VastDoc,
    break_id: &str,
    duration_s: f64,
    cadence_ms: u64,
    threshold_s: f64,
) -> Pod {
    let mut ads: Vec<VastAd> = doc.ads.into_iter().filter(|a| !a.is_wrapper).collect();
    ads.sort_by_key(|a| a.sequence.unwrap_or(u32::MAX));
    let mut items: Vec<PodItem> = Vec::with_capacity(ads.len());
    items.extend(ads.into_iter().filter_map(into_pod_item));
    build_pod(
        &PodRequest {
            break_id,
            duration_s,
            cadence_ms,
            personalization_threshold_s: threshold_s,
            capped: &[],
            source: PodSource::Vast,
            tracking: crate::ads::pod::TrackingLimits::default(),
        },
        items,
        Slate::default(),
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const INLINE: &str = r#"<?xml version="1.0"?>
<VAST version="4.2">
 <Ad id="a1" sequence="2"><InLine><AdSystem>x</AdSystem>
  <Impression><![CDATA[https://t.example/imp?a=1]]></Impression>
  <Impression>https://t.example/imp2?a=1&amp;b=2</Impression>
  <Error>https://t.example/err?c=[ERRORCODE]</Error>
  <Creatives><Creative id="c1" adId="ad-1"><UniversalAdId idRegistry="ad-id.org">UAID-1</UniversalAdId>
   <Linear><Duration>00:00:10.000</Duration>
    <TrackingEvents><Tracking event="start">https://t.example/start</Tracking><Tracking event="complete">https://t.example/done</Tracking></TrackingEvents>
    <MediaFiles><MediaFile delivery="streaming" type="application/x-mpegURL" width="1280" height="720">https://cdn.example/a1/master.m3u8</MediaFile>
     <MediaFile delivery="progressive" type="video/mp4" bitrate="2000">https://cdn.example/a1.mp4</MediaFile></MediaFiles>
   </Linear></Creative></Creatives></InLine></Ad>
 <Ad id="a0" sequence="1"><InLine><Creatives><Creative id="c0"><Linear><Duration>00:00:15</Duration></Linear></Creative></Creatives></InLine></Ad>
</VAST>"#;

    #[test]
    fn inline_pod_in_sequence_order() {
        let d = parse(INLINE).unwrap();
        assert_eq!(d.version, "4.2");
        assert_eq!(d.ads.len(), 2);
        let a = &d.ads[0];
        assert_eq!(
            a.impressions,
            vec![
                "https://t.example/imp?a=1",
                "https://t.example/imp2?a=1&b=2"
            ]
        );
        let c = &a.creatives[0];
        assert_eq!(c.universal_ad_id.as_deref(), Some("UAID-1"));
        assert_eq!(c.duration_s, Some(10.0));
        assert_eq!(c.media_files.len(), 2);
        assert!(c.media_files[0].is_hls());
        assert_eq!(c.tracking.start, vec!["https://t.example/start"]);
        let order: Vec<_> = ordered_inline_ads(&d)
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(order, vec!["a0", "a1"]);
    }

    #[test]
    fn wrappers_merge_tracking() {
        let w = parse(r#"<VAST version="3.0"><Ad id="w"><Wrapper><AdSystem>w</AdSystem><VASTAdTagURI><![CDATA[https://next.example/vast]]></VASTAdTagURI><Impression>https://w.example/imp</Impression><Creatives><Creative><Linear><TrackingEvents><Tracking event="start">https://w.example/start</Tracking></TrackingEvents></Linear></Creative></Creatives></Wrapper></Ad></VAST>"#).unwrap();
        assert_eq!(w.ads[0].wrapper_uri(), Some("https://next.example/vast"));
        let mut inline = parse(INLINE).unwrap().ads.remove(0);
        merge_wrapper(&mut inline, &w.ads[0]);
        assert_eq!(inline.impressions.len(), 3);
        assert_eq!(inline.creatives[0].tracking.start.len(), 2);
    }

    #[test]
    fn merged_wrapper_tracking_is_limited_in_the_pod() {
        // Inline and wrapper each under the limit; together over it.
        let imps = |host: &str| -> String {
            (0..40)
                .map(|i| format!("<Impression>https://{host}/imp/{i}</Impression>"))
                .collect()
        };
        let w = parse(&format!(r#"<VAST version="3.0"><Ad id="w"><Wrapper><VASTAdTagURI>https://next.example/vast</VASTAdTagURI>{}</Wrapper></Ad></VAST>"#, imps("w.example"))).unwrap();
        let mut inline = parse(&format!(r#"<VAST version="4.0"><Ad id="a1"><InLine>{}<Creatives><Creative id="c1"><Linear><Duration>00:00:10</Duration></Linear></Creative></Creatives></InLine></Ad></VAST>"#, imps("t.example"))).unwrap().ads.remove(0);
        merge_wrapper(&mut inline, &w.ads[0]);
        assert_eq!(inline.impressions.len(), 80);
        let mut items = vec![into_pod_item(inline).unwrap()];
        let mut reasons = Vec::new();
        crate::ads::pod::limit_tracking(&mut items, Default::default(), &mut reasons);
        let kept = &items[0].tracking.impression;
        assert_eq!(kept.len(), 64);
        assert!(kept[..40]
            .iter()
            .all(|u| u.starts_with("https://t.example/")));
        assert_eq!(
            reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["ad a1: 16 impression URLs over the limit of 64 dropped"]
        );
    }

    /// The fast attribute split yields exactly what quick-xml's iterator
    /// (checks off, errors skipped) does, malformed attributes included.
    #[test]
    fn attributes_split_as_quick_xml_does() {
        let cases = [
            "",
            " ",
            r#" a="1""#,
            r#" a="1" b='2'"#,
            r#" a="1"b='2'"#,
            " a = \"1\"\t\n b\r='x y'",
            r#" ns:a="x" x:y:z="w""#,
            r#" a="x'y" b='x"y'"#,
            r#" a="" b=''"#,
            r#" a="1" a="2""#,
            r#" a"#,
            r#" a b="2""#,
            r#" a=1 b="2""#,
            r#" a="1" b"#,
            r#" ="x" b="2""#,
            r#" a=="x" b="2""#,
            r#" a="1" = "2" c="3""#,
            r#" a= "#,
            r#" a="&amp;" b="&#x41;""#,
        ];
        for attrs in cases {
            let xml = format!("<X{attrs}/>");
            let mut r = Reader::from_str(&xml);
            let Ok(Event::Empty(e)) = r.read_event() else {
                panic!("no element for {attrs:?}");
            };
            let mut fast: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for_each_attr(&e, |k, v| fast.push((k.to_vec(), v.to_vec())));
            let slow: Vec<(Vec<u8>, Vec<u8>)> = e
                .attributes()
                .with_checks(false)
                .flatten()
                .map(|a| (a.key.local_name().as_ref().to_vec(), a.value.to_vec()))
                .collect();
            assert_eq!(fast, slow, "attributes {attrs:?}");
        }
    }

    #[test]
    fn text_in_pieces_and_entities() {
        let d = parse(r#"<VAST version="4.0"><Ad id="a&amp;b" sequence=" 3 "><InLine><Impression> https://x.example/?a=1&amp;b=2<![CDATA[&c=3]]> </Impression><Creatives><Creative id="c" AdID="i"><Linear><MediaFiles><MediaFile type="video/mp4" width=" 640 " height="x" fileSize="12345678901"><![CDATA[ https://m.example/a.mp4 ]]></MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>"#).unwrap();
        let a = &d.ads[0];
        assert_eq!(a.id, "a&b");
        assert_eq!(a.sequence, Some(3));
        assert_eq!(a.impressions, vec!["https://x.example/?a=1&b=2&c=3"]);
        let c = &a.creatives[0];
        assert_eq!(c.ad_id, "i");
        let m = &c.media_files[0];
        assert_eq!(m.url, "https://m.example/a.mp4");
        assert_eq!((m.width, m.height, m.file_size), (640, 0, 12_345_678_901));
    }

    #[test]
    fn empty_malformed_huge_and_not_vast() {
        let e = parse(r#"<VAST version="4.0"/>"#).unwrap();
        assert!(e.ads.is_empty());
        assert!(matches!(
            parse("<VAST><Ad><InLine></Ad></VAST>"),
            Err(VastError::Xml { .. })
        ));
        assert!(matches!(parse("<html/>"), Err(VastError::NotVast(_))));
        let big = format!("<VAST>{}</VAST>", " ".repeat(10 * 1024 * 1024));
        assert!(matches!(parse(&big), Err(VastError::TooLarge { .. })));
        let deep = format!("<VAST>{}{}</VAST>", "<a>".repeat(100), "</a>".repeat(100));
        assert!(matches!(parse(&deep), Err(VastError::TooDeep)));
        assert_eq!(parse_duration("00:00:30.5"), Some(30.5));
        assert_eq!(parse_duration("bogus"), None);
        assert_eq!(parse_duration("01:02:03"), Some(3723.0));
        assert_eq!(parse_duration(" 1:2:3.25 "), Some(3723.25));
        assert_eq!(parse_duration("00:60:00"), None);
        assert_eq!(parse_duration("00:00:1e1"), Some(10.0));
    }
}
