//! Thumbnail sizes and what a thumbnail download reports.

use std::fmt;
use std::str::FromStr;

/// The three sizes Preservica renders thumbnails in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ThumbnailSize {
    /// 64 pixels.
    Small,
    /// 150 pixels.
    Medium,
    /// 400 pixels.
    #[default]
    Large,
}

impl ThumbnailSize {
    /// The wire value: `small`, `medium` or `large`.
    pub fn as_str(self) -> &'static str {
        match self {
            ThumbnailSize::Small => "small",
            ThumbnailSize::Medium => "medium",
            ThumbnailSize::Large => "large",
        }
    }
}

impl fmt::Display for ThumbnailSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a [`ThumbnailSize`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown thumbnail size {0:?}; use small, medium or large")]
pub struct ParseThumbnailSizeError(String);

impl FromStr for ThumbnailSize {
    type Err = ParseThumbnailSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "small" => Ok(ThumbnailSize::Small),
            "medium" => Ok(ThumbnailSize::Medium),
            "large" => Ok(ThumbnailSize::Large),
            _ => Err(ParseThumbnailSizeError(s.to_owned())),
        }
    }
}

/// A thumbnail that was written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The `Content-Type` Preservica sent, as sent.
    pub content_type: Option<String>,
    /// How many bytes were written.
    pub bytes: u64,
}

impl Thumbnail {
    /// A file extension for the content type: `jpg`, `png`, `gif`, `webp`, or `bin` when
    /// unknown.
    pub fn extension(&self) -> &'static str {
        let Some(content_type) = self.content_type.as_deref() else {
            return "bin";
        };
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
            "image/png" => "png",
            "image/gif" => "gif",
            "image/webp" => "webp",
            _ => "bin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_through_text() {
        for size in [
            ThumbnailSize::Small,
            ThumbnailSize::Medium,
            ThumbnailSize::Large,
        ] {
            assert_eq!(size.to_string().parse::<ThumbnailSize>(), Ok(size));
        }
        assert_eq!("LARGE".parse::<ThumbnailSize>(), Ok(ThumbnailSize::Large));
        assert!("huge".parse::<ThumbnailSize>().is_err());
        assert_eq!(ThumbnailSize::default(), ThumbnailSize::Large);
    }

    #[test]
    fn extension_follows_the_content_type() {
        let check = |content_type: Option<&str>, expected: &str| {
            let thumbnail = Thumbnail {
                content_type: content_type.map(str::to_owned),
                bytes: 0,
            };
            assert_eq!(thumbnail.extension(), expected, "{content_type:?}");
        };
        check(Some("image/jpeg"), "jpg");
        check(Some("Image/PNG; charset=binary"), "png");
        check(Some("image/gif"), "gif");
        check(Some("image/webp"), "webp");
        check(Some("application/octet-stream"), "bin");
        check(None, "bin");
    }
}
