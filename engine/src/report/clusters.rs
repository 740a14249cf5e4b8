//! Joining the text items typst 0.15 cuts inside a grapheme cluster, before the PDF
//! is written (see [`join_split_clusters`]).

use typst::layout::{Em, Frame, FrameItem, Point};
use typst::model::Document;
use typst::text::{Glyph, TextItem};
use typst_layout::PagedDocument;

/// `doc` with the text runs typst cut inside a cluster put back together, so that
/// the PDF maps each cluster's text once.
///
/// typst 0.15 (`ShapedText::build` in typst-layout 0.15) starts a new text item
/// wherever the glyphs' vertical offset changes, which shaping does for every mark
/// it raises or lowers onto its base (Khmer, Balinese, Batak, Chakma, Kayah Li,
/// Limbu, Meetei Mayek, Newa), and gives each piece the text of all its glyphs'
/// clusters. A cluster cut in two is then in the text of both pieces, the PDF maps
/// both the base and the mark to the whole cluster, and text copied out of the PDF
/// repeats it (`ជំរាបសួរ` comes back as `ជំជំរាបសួសួរ`). Here each piece that continues
/// the cluster its predecessor ends with is appended to it, its glyphs keeping their
/// height as their own vertical offset, which the PDF writer draws at the same
/// place: the page looks the same. One pass over the items of every frame; frames
/// with nothing to join are not copied.
pub(super) fn join_split_clusters(doc: PagedDocument) -> PagedDocument {
    let mut joined_any = false;
    let pages: Vec<_> = doc
        .pages()
        .iter()
        .map(|page| {
            let mut page = page.clone();
            if let Some(frame) = join_in_frame(&page.frame) {
                page.frame = frame;
                joined_any = true;
            }
            page
        })
        .collect();
    if !joined_any {
        return doc;
    }
    // A new document, since its introspector is built from the pages; the pass
    // moves no tag, so it finds every element where it was.
    PagedDocument::new(pages.into_iter().collect(), doc.info().clone())
}

/// `frame` with its split clusters joined (see [`join_split_clusters`]), or `None`
/// when neither it nor a frame inside it has one.
fn join_in_frame(frame: &Frame) -> Option<Frame> {
    let items = frame.items().as_slice();
    // The items so far once one has changed; until then they are `items` itself.
    let mut joined: Option<Vec<(Point, FrameItem)>> = None;
    for (i, (pos, item)) in items.iter().enumerate() {
        let replacement = match item {
            FrameItem::Group(group) => join_in_frame(&group.frame).map(|frame| {
                let mut group = group.clone();
                group.frame = frame;
                FrameItem::Group(group)
            }),
            FrameItem::Text(text) => {
                let prev = match &joined {
                    Some(out) => out.last(),
                    None => i.checked_sub(1).map(|j| &items[j]),
                };
                let order = match prev {
                    Some((prev_pos, FrameItem::Text(prev))) => {
                        continuation(*prev_pos, prev, *pos, text)
                    }
                    _ => None,
                };
                if let Some(order) = order {
                    let out = joined.get_or_insert_with(|| items[..i].to_vec());
                    if let Some((prev_pos, FrameItem::Text(prev))) = out.last_mut() {
                        append(prev, *prev_pos, text, *pos, order);
                    }
                    continue;
                }
                None
            }
            _ => None,
        };
        match (replacement, &mut joined) {
            (Some(item), out) => out
                .get_or_insert_with(|| items[..i].to_vec())
                .push((*pos, item)),
            (None, Some(out)) => out.push((*pos, item.clone())),
            (None, None) => {}
        }
    }
    let mut frame = frame.clone();
    frame.clear();
    frame.push_multiple(joined?);
    Some(frame)
}

/// Where the text of a text item that continues a cluster goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Continuation {
    /// Left-to-right text: after the text of the item it continues.
    After,
    /// Right-to-left text (glyphs in drawing order, clusters in reverse): before it.
    Before,
}

/// Whether `next`, at `next_pos`, is a piece of the same shaped run as `prev`, at
/// `prev_pos`, cut off inside `prev`'s last cluster: the same font and look,
/// starting where `prev` ends, its first glyph in that cluster. typst gives every
/// glyph of a cluster the cluster's text and the span of its first character, so
/// equal text and span tell one cluster from the next, even one with equal text.
pub(super) fn continuation(
    prev_pos: Point,
    prev: &TextItem,
    next_pos: Point,
    next: &TextItem,
) -> Option<Continuation> {
    let (last, first) = (prev.glyphs.last()?, next.glyphs.first()?);
    let cluster = prev.text.get(last.range())?;
    let same_cluster = !cluster.is_empty()
        && last.span == first.span
        && next.text.get(first.range()) == Some(cluster);
    let same_look = prev.font == next.font
        && prev.size == next.size
        && prev.fill == next.fill
        && prev.stroke == next.stroke
        && prev.lang == next.lang
        && prev.region == next.region;
    let adjacent = (prev_pos.x + prev.width()).approx_eq(next_pos.x);
    // Glyph ranges are `u16`.
    let fits = prev.text.len() + next.text.len() <= usize::from(u16::MAX);
    if !(same_cluster && same_look && adjacent && fits) {
        None
    } else if last.range().end == prev.text.len() && first.range().start == 0 {
        Some(Continuation::After)
    } else if last.range().start == 0 && first.range().end == next.text.len() {
        Some(Continuation::Before)
    } else {
        None
    }
}

/// Appends `next`'s glyphs to `prev`, each raised by `next`'s height over `prev`,
/// and `next`'s text without the cluster they share; see [`continuation`].
pub(super) fn append(
    prev: &mut TextItem,
    prev_pos: Point,
    next: &TextItem,
    next_pos: Point,
    order: Continuation,
) {
    let shared = next.glyphs[0].range().len();
    // Frames are y-down, glyph offsets y-up.
    let rise = Em::from_abs(prev_pos.y - next_pos.y, next.size);
    let moved = |glyph: &Glyph, shift: u16| Glyph {
        y_offset: glyph.y_offset + rise,
        range: glyph.range.start + shift..glyph.range.end + shift,
        ..glyph.clone()
    };
    // `continuation` checked that both texts together fit in `u16`.
    match order {
        Continuation::After => {
            let shift = (prev.text.len() - shared) as u16;
            prev.text.push_str(&next.text[shared..]);
            prev.glyphs
                .extend(next.glyphs.iter().map(|glyph| moved(glyph, shift)));
        }
        Continuation::Before => {
            let before = &next.text[..next.text.len() - shared];
            let shift = before.len() as u16;
            prev.text = format!("{before}{}", prev.text).into();
            for glyph in &mut prev.glyphs {
                glyph.range = glyph.range.start + shift..glyph.range.end + shift;
            }
            prev.glyphs
                .extend(next.glyphs.iter().map(|glyph| moved(glyph, 0)));
        }
    }
}
