//! Greyscale images for inference: PGM (binary `P5` and text `P2`) and PNG (grey, colour,
//! palette, 1–16 bits), as values in [0, 1].
//!
//! Invariants: nothing is trusted before it is checked. At most [`MAX_IMAGE_BYTES`] are
//! read from a file; a header claiming more than [`MAX_PIXELS`] is refused before any pixel
//! buffer is allocated; a pixel above its PGM maxval, a palette index past the palette, a
//! truncated image and bytes after the last pixel are errors, not silently accepted.

use std::io::Read;
use std::path::Path;

use super::DataError;

/// The largest image file read, in bytes.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// The most pixels an image may have (2²⁴, a 4096 × 4096 picture).
pub const MAX_PIXELS: usize = 1 << 24;

/// A greyscale image, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width × height` values in [0, 1], row-major; colour is turned into luminance.
    pub pixels: Vec<f32>,
}

/// Reads a PGM or PNG file (see the [module docs](self)).
///
/// # Errors
/// [`DataError::Io`] if the file cannot be read, [`DataError::Format`] saying what is wrong
/// with its contents.
pub fn read_image(path: &Path) -> Result<Image, DataError> {
    let io = |source| DataError::Io { path: path.into(), source };
    // One byte more than any image accepted: a device or a huge file is refused unread.
    let mut bytes = Vec::new();
    super::open_regular(path)?.take(MAX_IMAGE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_IMAGE_BYTES {
        return Err(DataError::format(
            path,
            format!("larger than the {} MiB an image may have", MAX_IMAGE_BYTES >> 20),
        ));
    }
    decode_image(&bytes, path)
}

/// Decodes PGM or PNG bytes; `origin` names them in errors.
///
/// # Errors
/// [`DataError::Format`] saying what is wrong.
pub fn decode_image(bytes: &[u8], origin: &Path) -> Result<Image, DataError> {
    let result = if bytes.starts_with(b"\x89PNG") { decode_png(bytes) } else { decode_pgm(bytes) };
    result.map_err(|m| DataError::format(origin, m))
}

fn too_large(w: usize, h: usize) -> String {
    format!("{w}×{h} is too large (at most 2^24 pixels)")
}

fn decode_png(bytes: &[u8]) -> Result<Image, String> {
    let unreadable = |e: png::DecodingError| format!("not a readable PNG: {e}");
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let indexed = {
        let mut probe = png::Decoder::new(std::io::Cursor::new(bytes));
        probe.set_transformations(png::Transformations::IDENTITY);
        let info = probe.read_info().map_err(unreadable)?;
        info.info().color_type == png::ColorType::Indexed
    };
    // Palette images are expanded here, not by the decoder: png 0.18's expansion panics on
    // a palette whose length is not a multiple of 3 (found by fuzzing), and maps an index
    // past the palette to black without a word. Grey images of 1–4 bits become 8-bit.
    decoder.set_transformations(if indexed { png::Transformations::IDENTITY } else { png::Transformations::EXPAND });
    let mut reader = decoder.read_info().map_err(unreadable)?;
    let info = reader.info();
    let (w, h) = (info.width as usize, info.height as usize);
    if w.saturating_mul(h) > MAX_PIXELS {
        return Err(too_large(w, h));
    }
    let palette: Option<Vec<u8>> = info.palette.as_ref().map(|p| p.to_vec());
    let mut buf = vec![0; reader.output_buffer_size().ok_or("image too large")?];
    let frame = reader.next_frame(&mut buf).map_err(unreadable)?;
    if indexed {
        let palette = palette.ok_or("a palette image without a palette")?;
        if palette.is_empty() || palette.len() % 3 != 0 {
            return Err(format!("a palette of {} bytes is not a list of RGB colours", palette.len()));
        }
        let bits = frame.bit_depth as usize;
        let mut pixels = Vec::with_capacity(w * h);
        for row in buf[..frame.buffer_size()].chunks(frame.line_size).take(h) {
            for x in 0..w {
                let bit = x * bits;
                let byte = *row.get(bit / 8).ok_or("unsupported PNG pixel layout")?;
                let index = usize::from((byte >> (8 - bits - bit % 8)) & ((1u16 << bits) - 1) as u8);
                let rgb = palette.get(3 * index..3 * index + 3).ok_or_else(|| {
                    format!("palette index {index} is past the {} colours of the palette", palette.len() / 3)
                })?;
                pixels.push(luminance(rgb[0], rgb[1], rgb[2]));
            }
        }
        if pixels.len() != w * h {
            return Err("unsupported PNG pixel layout".into());
        }
        return Ok(Image { width: w, height: h, pixels });
    }
    let data = &buf[..frame.buffer_size()];
    let channels = frame.color_type.samples();
    let depth = match frame.bit_depth {
        png::BitDepth::Eight => 1,
        png::BitDepth::Sixteen => 2,
        other => return Err(format!("unsupported PNG bit depth {other:?}")),
    };
    // (grey in [0, 1], alpha in [0, 1]) per pixel.
    let samples: Vec<(f32, f32)> = data
        .chunks_exact(channels * depth)
        .map(|px| {
            // The most significant byte of each sample is precise enough for 8-bit models.
            let c = |i: usize| px[i * depth];
            let grey = if channels >= 3 { luminance(c(0), c(1), c(2)) } else { f32::from(c(0)) / 255.0 };
            let alpha = match channels {
                2 => f32::from(c(1)) / 255.0,
                4 => f32::from(c(3)) / 255.0,
                _ => 1.0,
            };
            (grey, alpha)
        })
        .collect();
    // Transparent pixels are background: composited over white behind dark strokes and over
    // black behind light ones (the strokes' alpha-weighted mean decides), so that a digit
    // drawn on a transparent canvas reads as one on paper or on MNIST's black.
    let weight: f32 = samples.iter().map(|(_, a)| a).sum();
    let ink = samples.iter().map(|(g, a)| g * a).sum::<f32>() / weight.max(f32::MIN_POSITIVE);
    let background = if weight > 0.0 && ink < 0.5 { 1.0 } else { 0.0 };
    let pixels: Vec<f32> = samples.iter().map(|&(g, a)| g * a + background * (1.0 - a)).collect();
    if pixels.len() != w * h {
        return Err("unsupported PNG pixel layout".into());
    }
    Ok(Image { width: w, height: h, pixels })
}

/// Rec. 601 luma of an 8-bit colour, in [0, 1].
fn luminance(r: u8, g: u8, b: u8) -> f32 {
    ((0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)) / 255.0).clamp(0.0, 1.0)
}

fn decode_pgm(bytes: &[u8]) -> Result<Image, String> {
    let mut pos = 0;
    let mut token = || -> Option<String> {
        loop {
            while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if pos < bytes.len() && bytes[pos] == b'#' {
                while pos < bytes.len() && bytes[pos] != b'\n' {
                    pos += 1;
                }
                continue;
            }
            break;
        }
        let start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        (pos > start).then(|| String::from_utf8_lossy(&bytes[start..pos]).to_string())
    };
    let magic = token().ok_or("empty file")?;
    if magic != "P5" && magic != "P2" {
        return Err("not a PGM (P2/P5) or PNG image".into());
    }
    let mut num = |what: &str| -> Result<usize, String> {
        token().and_then(|t| t.parse().ok()).ok_or_else(|| format!("bad PGM header: {what} missing"))
    };
    let (w, h, max) = (num("width")?, num("height")?, num("maxval")?);
    if w.saturating_mul(h) > MAX_PIXELS {
        return Err(format!("bad PGM header: {}", too_large(w, h)));
    }
    if w == 0 || h == 0 || max == 0 || max > 65535 {
        return Err(format!("bad PGM header: {w}×{h}, maxval {max}"));
    }
    let n = w * h;
    let values: Vec<usize> = if magic == "P2" {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(num("pixel")?);
        }
        if token().is_some() {
            return Err(format!("more than the {n} pixels a {w}×{h} PGM has"));
        }
        v
    } else {
        let start = pos + 1; // one whitespace byte after maxval
        let size = if max > 255 { 2 } else { 1 };
        let data = bytes.get(start..start + n * size).ok_or("truncated PGM pixel data")?;
        if bytes.len() > start + n * size {
            return Err(format!("{} bytes after the pixels of a {w}×{h} PGM", bytes.len() - start - n * size));
        }
        data.chunks_exact(size)
            .map(|c| if size == 2 { usize::from(c[0]) << 8 | usize::from(c[1]) } else { usize::from(c[0]) })
            .collect()
    };
    if let Some(v) = values.iter().find(|&&v| v > max) {
        return Err(format!("pixel value {v} is above the maxval {max}"));
    }
    Ok(Image { width: w, height: h, pixels: values.into_iter().map(|v| v as f32 / max as f32).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pgm(bytes: &[u8]) -> Result<(usize, usize, Vec<f32>), String> {
        decode_pgm(bytes).map(|i| (i.width, i.height, i.pixels))
    }

    #[test]
    fn pgm_in_both_encodings() {
        assert_eq!(pgm(b"P2\n# comment\n2 1\n255\n0 255\n").unwrap(), (2, 1, vec![0.0, 1.0]));
        assert_eq!(pgm(b"P5 2 1 255\n\x00\xff").unwrap(), (2, 1, vec![0.0, 1.0]));
        assert_eq!(pgm(b"P5 1 1 65535\n\xff\xff").unwrap(), (1, 1, vec![1.0]));
        assert!(pgm(b"P5 2 2 255\n\x00").is_err());
        assert!(pgm(b"GIF89a").is_err());
        assert!(pgm(b"P2 2 1 10\n0 11\n").unwrap_err().contains("above the maxval"));
        assert!(pgm(b"P2 2 1 10\n0 1 2\n").unwrap_err().contains("more than"));
        assert!(pgm(b"P5 2 1 255\n\x00\xffjunk").unwrap_err().contains("after the pixels"));
        assert!(pgm(b"P5 100000 100000 255\n").unwrap_err().contains("too large"));
        assert!(pgm(b"P5 2 1 0\n\x00\x00").unwrap_err().contains("maxval 0"));
    }

    fn png_bytes(
        color: png::ColorType,
        depth: png::BitDepth,
        palette: Option<Vec<u8>>,
        w: u32,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut e = png::Encoder::new(&mut out, w, 1);
            e.set_color(color);
            e.set_depth(depth);
            if let Some(p) = palette {
                e.set_palette(p);
            }
            let mut wr = e.write_header().unwrap();
            wr.write_image_data(data).unwrap();
        }
        out
    }

    #[test]
    fn transparent_pixels_are_background() {
        let origin = Path::new("t.png");
        // Black ink (opaque) on a transparent canvas: the canvas becomes white paper.
        let rgba = png_bytes(png::ColorType::Rgba, png::BitDepth::Eight, None, 2, &[0, 0, 0, 255, 0, 0, 0, 0]);
        assert_eq!(decode_image(&rgba, origin).unwrap().pixels, vec![0.0, 1.0]);
        // White ink on a transparent canvas: the canvas becomes black, as MNIST's.
        let rgba = png_bytes(png::ColorType::Rgba, png::BitDepth::Eight, None, 2, &[255, 255, 255, 255, 9, 9, 9, 0]);
        assert_eq!(decode_image(&rgba, origin).unwrap().pixels, vec![1.0, 0.0]);
        // Grey with alpha: half-transparent white ink over black.
        let ga = png_bytes(png::ColorType::GrayscaleAlpha, png::BitDepth::Eight, None, 2, &[255, 255, 255, 0]);
        assert_eq!(decode_image(&ga, origin).unwrap().pixels, vec![1.0, 0.0]);
    }

    #[test]
    fn png_grey_colour_and_palette() {
        let origin = Path::new("t.png");
        let grey = png_bytes(png::ColorType::Grayscale, png::BitDepth::Eight, None, 2, &[0, 255]);
        assert_eq!(decode_image(&grey, origin).unwrap().pixels, vec![0.0, 1.0]);
        let rgb = png_bytes(png::ColorType::Rgb, png::BitDepth::Eight, None, 1, &[255, 255, 255]);
        assert!((decode_image(&rgb, origin).unwrap().pixels[0] - 1.0).abs() < 1e-6);
        // Two palette colours (black, white); 1-bit indices 0 1 0.
        let palette = vec![0, 0, 0, 255, 255, 255];
        let ok = png_bytes(png::ColorType::Indexed, png::BitDepth::One, Some(palette.clone()), 3, &[0b0100_0000]);
        assert_eq!(decode_image(&ok, origin).unwrap().pixels, vec![0.0, 1.0, 0.0]);
        // An 8-bit index 5 with a two-colour palette.
        let past = png_bytes(png::ColorType::Indexed, png::BitDepth::Eight, Some(palette), 2, &[1, 5]);
        let e = decode_image(&past, origin).unwrap_err().to_string();
        assert!(e.contains("palette index 5"), "{e}");
    }
}
