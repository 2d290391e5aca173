//! A read-only element tree over an XML document that remembers where every
//! element is in the text (byte spans), so the MPD rewriter can copy what it
//! does not change byte for byte and replace only what it does.
//!
//! quick-xml checks well-formedness and finds the tags; names and attribute
//! values are borrowed slices of the input (raw, still escaped: callers
//! unescape what they read with [`unescaped`]). Bounded: a document with
//! more than [`MAX_NODES`] elements or deeper than [`MAX_DEPTH`] is refused.

use quick_xml::events::Event;
use quick_xml::Reader;
use std::borrow::Cow;

/// Elements in one MPD: a live MPD has tens to a few thousand (a long
/// `SegmentTimeline` without `@r`); more is an attack or a mistake.
pub const MAX_NODES: usize = 200_000;
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("not well-formed XML at byte {at}: {msg}")]
    Xml { at: usize, msg: String },
    #[error("more than {MAX_NODES} elements")]
    TooManyElements,
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("no root element")]
    NoRoot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node<'a> {
    /// Local name (any `prefix:` removed) and the qualified name as written.
    pub name: &'a str,
    pub qname: &'a str,
    /// `<` of the start tag; just after its `>`.
    pub start: usize,
    pub tag_end: usize,
    /// `<` of the end tag (== `tag_end` for an empty element); just after
    /// the element.
    pub inner_end: usize,
    pub end: usize,
    /// (qualified name, raw value) in document order.
    pub attrs: Vec<(&'a str, &'a str)>,
    pub children: Vec<usize>,
    pub parent: Option<usize>,
}

impl<'a> Node<'a> {
    /// The raw (escaped) value of an attribute by qualified name.
    pub fn attr(&self, name: &str) -> Option<&'a str> {
        self.attrs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree<'a> {
    pub text: &'a str,
    pub nodes: Vec<Node<'a>>,
    pub root: usize,
}

impl<'a> Tree<'a> {
    pub fn parse(text: &'a str) -> Result<Tree<'a>, TreeError> {
        // A byte-order mark is not part of the document (spans start after
        // it; a rewrite leaves it out).
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut r = Reader::from_str(text);
        r.config_mut().trim_text(false);
        let mut nodes: Vec<Node<'a>> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        let mut root = None;
        loop {
            let before = usize::try_from(r.buffer_position()).unwrap_or(usize::MAX);
            let ev = r.read_event().map_err(|e| TreeError::Xml {
                at: usize::try_from(r.error_position()).unwrap_or(0),
                msg: e.to_string(),
            })?;
            let after = usize::try_from(r.buffer_position()).unwrap_or(usize::MAX);
            match ev {
                Event::Start(_) | Event::Empty(_) => {
                    let empty = matches!(ev, Event::Empty(_));
                    if nodes.len() >= MAX_NODES {
                        return Err(TreeError::TooManyElements);
                    }
                    if open.len() >= MAX_DEPTH {
                        return Err(TreeError::TooDeep);
                    }
                    let tag = text.get(before..after).unwrap_or_default();
                    let (qname, attrs) = parse_tag(tag);
                    let id = nodes.len();
                    let parent = open.last().copied();
                    if let Some(p) = parent.and_then(|p| nodes.get_mut(p)) {
                        p.children.push(id);
                    } else if root.is_none() {
                        root = Some(id);
                    }
                    nodes.push(Node {
                        name: local(qname),
                        qname,
                        start: before,
                        tag_end: after,
                        inner_end: after,
                        end: after,
                        attrs,
                        children: Vec::new(),
                        parent,
                    });
                    if !empty {
                        open.push(id);
                    }
                }
                Event::End(_) => {
                    if let Some(n) = open.pop().and_then(|i| nodes.get_mut(i)) {
                        n.inner_end = before;
                        n.end = after;
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !open.is_empty() {
            return Err(TreeError::Xml {
                at: text.len(),
                msg: "unclosed element".into(),
            });
        }
        Ok(Tree {
            text,
            nodes,
            root: root.ok_or(TreeError::NoRoot)?,
        })
    }

    /// The indices of an element's descendants (nodes are in document
    /// order, so they follow it up to its end).
    pub fn descendants(&self, i: usize) -> std::ops::Range<usize> {
        let Some(n) = self.node(i) else {
            return 0..0;
        };
        let first = i.saturating_add(1);
        let end = self
            .nodes
            .get(first..)
            .unwrap_or_default()
            .iter()
            .position(|d| d.start >= n.end)
            .map_or(self.nodes.len(), |k| first.saturating_add(k));
        first..end
    }

    pub fn node(&self, i: usize) -> Option<&Node<'a>> {
        self.nodes.get(i)
    }

    /// The element's children with this local name, in order.
    pub fn children<'t>(&'t self, i: usize, name: &'t str) -> impl Iterator<Item = usize> + 't {
        self.node(i)
            .map(|n| n.children.as_slice())
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(move |c| self.node(*c).is_some_and(|n| n.name == name))
    }

    pub fn child(&self, i: usize, name: &str) -> Option<usize> {
        self.children(i, name).next()
    }

    pub fn attr(&self, i: usize, name: &str) -> Option<&'a str> {
        self.node(i).and_then(|n| n.attr(name))
    }

    /// The whole element as written.
    pub fn outer(&self, i: usize) -> &'a str {
        self.node(i)
            .and_then(|n| self.text.get(n.start..n.end))
            .unwrap_or_default()
    }

    /// What is between the start and end tags, as written.
    pub fn inner(&self, i: usize) -> &'a str {
        self.node(i)
            .and_then(|n| self.text.get(n.tag_end..n.inner_end))
            .unwrap_or_default()
    }

    /// The element's text content, unescaped and trimmed (child elements'
    /// text included only when there are none: `BaseURL`, `Location`).
    pub fn text_of(&self, i: usize) -> Cow<'a, str> {
        let raw = self.inner(i);
        match unescaped(raw.trim()) {
            Cow::Borrowed(b) => Cow::Borrowed(b),
            Cow::Owned(o) => Cow::Owned(o),
        }
    }
}

/// An attribute value or text with the XML entities resolved (the raw text
/// when it has none, or when an entity is malformed: a reader never fails
/// on one odd value).
pub fn unescaped(raw: &str) -> Cow<'_, str> {
    if !raw.contains('&') {
        return Cow::Borrowed(raw);
    }
    quick_xml::escape::unescape(raw).unwrap_or(Cow::Borrowed(raw))
}

/// A value as it must be written inside a double-quoted attribute or as
/// text.
pub fn escaped(v: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(v)
}

fn local(qname: &str) -> &str {
    qname.rsplit_once(':').map_or(qname, |(_, l)| l)
}

/// The qualified name and the attributes of a start or empty tag
/// (`<name a="1" b='2'>` or `.../>`), as slices of it. quick-xml has
/// checked the syntax; anything odd is skipped, never a panic.
pub(crate) fn parse_tag(tag: &str) -> (&str, Vec<(&str, &str)>) {
    let body = tag
        .strip_prefix('<')
        .unwrap_or(tag)
        .trim_end_matches('>')
        .trim_end_matches('/');
    let name_end = body
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(body.len());
    let (name, mut rest) = body.split_at_checked(name_end).unwrap_or((body, ""));
    let mut attrs = Vec::new();
    loop {
        rest = rest.trim_start();
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let after = after.trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some((value, tail)) = after.get(1..).and_then(|a| a.split_once(q)) else {
            break;
        };
        attrs.push((key.trim(), value));
        rest = tail;
    }
    (name, attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_elements_exactly() {
        let x = r#"<?xml version="1.0"?><MPD a="1" b='x &amp; y'><Period id="p"><S t="0"/></Period><!-- c --></MPD>"#;
        let t = Tree::parse(x).unwrap();
        let root = t.node(t.root).unwrap();
        assert_eq!(root.name, "MPD");
        assert_eq!(root.attr("b"), Some("x &amp; y"));
        assert_eq!(unescaped(root.attr("b").unwrap()), "x & y");
        let p = t.child(t.root, "Period").unwrap();
        assert_eq!(t.outer(p), r#"<Period id="p"><S t="0"/></Period>"#);
        assert_eq!(t.inner(p), r#"<S t="0"/>"#);
        let s = t.child(p, "S").unwrap();
        assert_eq!(t.outer(s), r#"<S t="0"/>"#);
    }

    #[test]
    fn prefixes_are_local_names() {
        let t = Tree::parse(r#"<a xmlns:x="u"><x:Signal><x:Binary>AA==</x:Binary></x:Signal></a>"#)
            .unwrap();
        let s = t.child(t.root, "Signal").unwrap();
        assert_eq!(t.node(s).unwrap().qname, "x:Signal");
        assert_eq!(t.text_of(t.child(s, "Binary").unwrap()), "AA==");
    }

    #[test]
    fn bad_documents_are_errors() {
        for bad in ["", "<a>", "<a></b>", "just text", "<a><b></a>"] {
            assert!(Tree::parse(bad).is_err(), "{bad:?}");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(Tree::parse(&deep), Err(TreeError::TooDeep));
    }
}
