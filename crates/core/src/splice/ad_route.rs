//! The proxied ad-segment route,
//! `{prefix}{break}/{item}/{bandwidth}/{pos}.{ts|m4s}` under
//! `/{org}/{channel}/ad/`, built (SSAI splice, SGAI ad playlists) and
//! parsed (the manifest worker) in one place. An ad may come in TS and
//! fMP4 at one bandwidth, so the extension names the rendition's container
//! (an init segment means fMP4), taken from the rendition and the route's
//! path, never from the media URI (whose query string, e.g.
//! `seg.m4s?tok=x`, used to turn into `.ts`).

use crate::model::AdRendition;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Ts,
    Fmp4,
}

impl Container {
    pub fn of(r: &AdRendition) -> Container {
        if r.init_uri.is_some() {
            Container::Fmp4
        } else {
            Container::Ts
        }
    }

    pub fn ext(self) -> &'static str {
        match self {
            Container::Ts => "ts",
            Container::Fmp4 => "m4s",
        }
    }

    fn from_ext(ext: &str) -> Option<Container> {
        match ext {
            "ts" => Some(Container::Ts),
            "m4s" | "mp4" => Some(Container::Fmp4),
            _ => None,
        }
    }
}

/// One proxied ad segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdSegmentRoute<'a> {
    pub break_id: &'a str,
    pub item: usize,
    pub bandwidth: u64,
    pub pos: u32,
    pub container: Container,
}

impl<'a> AdSegmentRoute<'a> {
    /// The route for segment `pos` of rendition `r` of pod item `item`.
    pub fn new(break_id: &'a str, item: usize, r: &AdRendition, pos: u32) -> Self {
        AdSegmentRoute {
            break_id,
            item,
            bandwidth: r.bandwidth,
            pos,
            container: Container::of(r),
        }
    }

    /// Append `{prefix}{break}/{item}/{bw}/{pos}.{ext}[?sid=…]` to `out`.
    pub fn write(&self, prefix: &str, session: Option<&str>, out: &mut String) {
        let _ = write!(
            out,
            "{prefix}{}/{}/{}/{}.{}",
            self.break_id,
            self.item,
            self.bandwidth,
            self.pos,
            self.container.ext()
        );
        if let Some(sid) = session {
            let _ = write!(out, "?sid={sid}");
        }
    }

    pub fn to_path(&self, prefix: &str, session: Option<&str>) -> String {
        let mut s = String::with_capacity(prefix.len().saturating_add(64));
        self.write(prefix, session, &mut s);
        s
    }

    /// Parse the path segments after `/ad/`: `[break, item, bw, "pos.ext"]`.
    pub fn parse(parts: &[&'a str]) -> Option<AdSegmentRoute<'a>> {
        let [break_id, item, bw, file] = parts else {
            return None;
        };
        let (pos, ext) = file.split_once('.')?;
        Some(AdSegmentRoute {
            break_id,
            item: item.parse().ok()?,
            bandwidth: bw.parse().ok()?,
            pos: pos.parse().ok()?,
            container: Container::from_ext(ext)?,
        })
    }

    /// Does rendition `r` serve this route?
    pub fn matches(&self, r: &AdRendition) -> bool {
        r.bandwidth == self.bandwidth && Container::of(r) == self.container
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AdSegment, TrackKind};

    fn r(init: bool, uri: &str) -> AdRendition {
        AdRendition {
            bandwidth: 900_000,
            codecs: None,
            resolution: None,
            kind: TrackKind::Muxed,
            playlist_url: "p.m3u8".into(),
            cadence_s: 2.0,
            segments: vec![AdSegment {
                uri: uri.into(),
                duration: 2.0,
                byterange: None,
            }],
            init_uri: init.then(|| "init.mp4".into()),
            key: None,
            memo: Default::default(),
        }
    }

    #[test]
    fn built_and_parsed_alike() {
        // fMP4 media with a query string: the route says m4s, not "ts".
        let f = r(true, "https://cdn/seg0.m4s?tok=x");
        let route = AdSegmentRoute::new("b-1", 2, &f, 7);
        let path = route.to_path("/o/c/ad/", Some("s1-x"));
        assert_eq!(path, "/o/c/ad/b-1/2/900000/7.m4s?sid=s1-x");
        let tail = path
            .trim_start_matches("/o/c/ad/")
            .split('?')
            .next()
            .unwrap();
        let parts: Vec<&str> = tail.split('/').collect();
        let back = AdSegmentRoute::parse(&parts).unwrap();
        assert_eq!(back, route);
        assert!(back.matches(&f));
        assert!(!back.matches(&r(false, "https://cdn/seg0.ts")));
        let ts = AdSegmentRoute::new("b", 0, &r(false, "https://cdn/a.ts?x=1.m4s"), 0);
        assert_eq!(ts.to_path("/", None), "/b/0/900000/0.ts");
        for bad in [
            &["b", "0", "1", "0.html"][..],
            &["b", "x", "1", "0.ts"],
            &["b", "0", "1"],
            &["b", "0", "1", "0"],
        ] {
            assert_eq!(AdSegmentRoute::parse(bad), None, "{bad:?}");
        }
    }
}
