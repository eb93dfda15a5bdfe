//! Text for language models: a character vocabulary, and a text cut into windows of
//! `context` characters whose targets are the characters that follow each position.
//!
//! Invariants: a vocabulary is the text's distinct characters in sorted order and an id is a
//! position in it, so the same text gives the same ids everywhere; the held-out part of a
//! text is its end, contiguous, so that no training window contains a held-out character.

use std::path::Path;

use ndarray::Array2;

use super::dataset::{Dataset, Targets};
use super::DataError;

/// The largest text file read (1 GiB).
pub const MAX_TEXT_BYTES: u64 = 1 << 30;

/// The distinct characters of a text, sorted; a character's id is its position.
///
/// ```
/// use adjoint::data::Vocabulary;
/// let vocab = Vocabulary::of("hello");
/// assert_eq!(vocab.to_string(), "ehlo");
/// let ids = vocab.encode("hole").unwrap();
/// assert_eq!(ids, [1, 3, 2, 0]);
/// assert_eq!(vocab.decode(&ids), "hole");
/// let err = vocab.encode("help!").unwrap_err().to_string();
/// assert!(err.contains("'p'") && err.contains("position 4"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    chars: Vec<char>,
}

impl Vocabulary {
    /// The vocabulary of `text`.
    pub fn of(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Vocabulary { chars }
    }

    /// The vocabulary whose characters are those of `chars` (as written by its
    /// [`Display`](std::fmt::Display): `vocabulary.to_string()`).
    ///
    /// # Errors
    /// If `chars` is empty, or not sorted without repeats (it was not written by
    /// `to_string`).
    pub fn parse(chars: &str) -> Result<Self, DataError> {
        let list: Vec<char> = chars.chars().collect();
        if list.is_empty() || list.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DataError::Mismatch(
                "a vocabulary is its characters sorted and without repeats, and not empty".into(),
            ));
        }
        Ok(Vocabulary { chars: list })
    }

    /// The number of characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether it has no characters.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<usize> {
        self.chars.binary_search(&c).ok()
    }

    /// The ids of `text`'s characters.
    ///
    /// # Errors
    /// [`DataError::Mismatch`] naming the first character that is not in the vocabulary and
    /// its 1-based position.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>, DataError> {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                self.id(c).ok_or_else(|| {
                    DataError::Mismatch(format!(
                        "character {c:?} (U+{:04X}) at position {} is not in the vocabulary of {} characters",
                        c as u32,
                        i + 1,
                        self.len()
                    ))
                })
            })
            .collect()
    }

    /// The text of `ids` (an id outside the vocabulary gives U+FFFD).
    pub fn decode(&self, ids: &[usize]) -> String {
        ids.iter().map(|&i| self.chars.get(i).copied().unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
    }
}

impl std::fmt::Display for Vocabulary {
    /// The characters in id order (what [`Vocabulary::parse`] reads).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.chars.iter().try_for_each(|c| write!(f, "{c}"))
    }
}

/// A UTF-8 text file of at most [`MAX_TEXT_BYTES`], not empty, without the byte-order mark
/// some editors put first (it is not part of the text).
///
/// # Errors
/// If the file cannot be read, is not a regular file, is too large, is not UTF-8 (the error
/// gives the offset of the first bad byte), or is empty.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    let mut text = super::csv::read_text_limited(path, MAX_TEXT_BYTES, "a text file")?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    if text.is_empty() {
        return Err(DataError::format(path, "is empty: a language model needs text to learn from"));
    }
    Ok(text)
}

impl Dataset {
    /// Windows of `context` ids with, for each position, the id that follows it as its
    /// target: the windows start every `context` ids, so each id is predicted once
    /// (`(ids.len() − 1) / context` windows). Ids are below `classes`.
    ///
    /// ```
    /// use adjoint::data::Dataset;
    /// let d = Dataset::sequences(&[0, 1, 2, 3, 4, 5, 6], 3, 7);
    /// assert_eq!(d.len(), 2);
    /// let b = d.rows(0, 2);
    /// assert_eq!(b.x.to_vec(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    /// assert_eq!(b.labels, [1, 2, 3, 4, 5, 6]);
    /// ```
    ///
    /// # Panics
    /// If `context` is 0 or an id is not below `classes`.
    pub fn sequences(ids: &[usize], context: usize, classes: usize) -> Dataset {
        assert!(context > 0, "Dataset::sequences: a context of 0");
        if let Some(bad) = ids.iter().find(|&&i| i >= classes) {
            panic!("Dataset::sequences: id {bad} is not below the {classes} classes");
        }
        let n = ids.len().saturating_sub(1) / context;
        let inputs = Array2::from_shape_fn((n, context), |(r, t)| ids[r * context + t]);
        let labels = Array2::from_shape_fn((n, context), |(r, t)| ids[r * context + t + 1]);
        Dataset::from_parts(inputs, Targets::Sequences { labels, classes })
    }
}

/// A training and a held-out dataset of `context`-character windows from a text's `ids`:
/// the last `test_fraction` of the text is held out.
///
/// # Errors
/// [`DataError::Mismatch`] if either part is too short for one window (`context + 1`
/// characters).
///
/// # Panics
/// If `test_fraction` is not in (0, 1), `context` is 0, or an id is not below `classes`.
pub fn text_datasets(
    ids: &[usize],
    context: usize,
    classes: usize,
    test_fraction: f64,
) -> Result<(Dataset, Dataset), DataError> {
    assert!(test_fraction > 0.0 && test_fraction < 1.0, "text_datasets: test fraction {test_fraction}");
    let held = ((ids.len() as f64 * test_fraction).round() as usize).min(ids.len());
    let (train, test) = ids.split_at(ids.len() - held);
    for (part, what) in [(train, "training"), (test, "held-out")] {
        if part.len() < context + 1 {
            return Err(DataError::Mismatch(format!(
                "the text has {} characters, so its {what} part ({} of them, with {}% held out) is shorter than \
                 one window of {} (the context {context} and the character after it); use a longer text or a \
                 shorter context",
                ids.len(),
                part.len(),
                100.0 * test_fraction,
                context + 1
            )));
        }
    }
    Ok((Dataset::sequences(train, context, classes), Dataset::sequences(test, context, classes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_round_trips_through_its_string_and_refuses_what_it_did_not_write() {
        let v = Vocabulary::of("the quick brown fox — ünïcödé\n");
        assert_eq!(Vocabulary::parse(&v.to_string()).unwrap(), v);
        assert!(Vocabulary::parse("ba").is_err());
        assert!(Vocabulary::parse("aa").is_err());
        assert!(Vocabulary::parse("").is_err());
        let text = "brown fox ünï";
        assert_eq!(v.decode(&v.encode(text).unwrap()), text);
        assert_eq!(v.decode(&[999]), "\u{FFFD}");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_text_and_special_files_are_not_read() {
        let dir = std::env::temp_dir().join(format!("adjoint-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bom.txt");
        std::fs::write(&p, "\u{feff}hello").unwrap();
        assert_eq!(read_text(&p).unwrap(), "hello");
        std::fs::write(&p, "\u{feff}").unwrap();
        assert!(read_text(&p).unwrap_err().to_string().contains("empty"));
        let e = read_text(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_held_out_part_is_the_end_of_the_text_and_both_parts_need_a_window() {
        let ids: Vec<usize> = (0..100).map(|i| i % 7).collect();
        let (train, test) = text_datasets(&ids, 4, 7, 0.2).unwrap();
        // 80 training ids: 19 windows; 20 held out: 4 windows.
        assert_eq!((train.len(), test.len()), (19, 4));
        let first = test.rows(0, 1);
        assert_eq!(first.x.to_vec(), [80.0f32, 81., 82., 83.].map(|v| (v as usize % 7) as f32));
        assert_eq!(first.labels, [81, 82, 83, 84].map(|v| v % 7));
        let err = text_datasets(&ids[..10], 4, 7, 0.2).unwrap_err().to_string();
        assert!(err.contains("held-out") && err.contains("shorter than one window of 5"), "{err}");
    }

    #[test]
    fn large_vocabularies_keep_their_ids_exactly() {
        let ids: Vec<usize> = (0..1001).map(|i| (i * 37) % 1000).collect();
        let d = Dataset::sequences(&ids, 10, 1000);
        let b = d.rows(0, d.len());
        assert_eq!(b.x.to_vec().iter().map(|&v| v as usize).collect::<Vec<_>>(), ids[..1000]);
        assert_eq!(b.labels, ids[1..]);
    }
}
