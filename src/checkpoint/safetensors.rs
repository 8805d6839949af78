//! A small, strict reader and writer for the safetensors format.
//!
//! Layout: a little-endian `u64` header length N, N bytes of JSON (`{name: {"dtype", "shape",
//! "data_offsets": [begin, end]}, "__metadata__": {string: string}}`, possibly space-padded), then the data
//! buffer. Offsets are relative to the data buffer, tensors are row-major little-endian, and together they
//! must tile the buffer exactly (no holes, no overlap, nothing after the last tensor).
//!
//! The reader validates all of that up front and every error names the file and, where there is one, the
//! tensor. Nothing assumes alignment: values are decoded byte by byte, so files written by other tools with
//! odd header lengths load the same. Large files are memory-mapped.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Element types of the format. The engine computes in f32; `F32`, `F16`, `BF16` and `F64` convert to f32
/// on read, the others are only understood well enough to validate a file (e.g. mask buffers to skip).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
}

impl Dtype {
    pub fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "BOOL" => Dtype::Bool,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E5M2" => Dtype::F8E5M2,
            "I16" => Dtype::I16,
            "U16" => Dtype::U16,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I32" => Dtype::I32,
            "U32" => Dtype::U32,
            "F32" => Dtype::F32,
            "I64" => Dtype::I64,
            "U64" => Dtype::U64,
            "F64" => Dtype::F64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
            Dtype::F64 => "F64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }
}

/// One tensor's header entry; `begin..end` is its byte range inside the data buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub begin: usize,
    pub end: usize,
}

impl Entry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Parses and validates a header against a data buffer of `data_len` bytes. `file` only labels errors.
/// Entries come back in file (offset) order.
pub fn parse_header(header: &[u8], data_len: usize, file: &Path) -> Result<(Vec<Entry>, BTreeMap<String, String>)> {
    let f = file.display();
    let json: serde_json::Value =
        serde_json::from_slice(header).with_context(|| format!("{f}: the safetensors header is not valid JSON"))?;
    let obj = json.as_object().ok_or_else(|| anyhow!("{f}: the safetensors header is not a JSON object"))?;
    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(obj.len());
    for (name, v) in obj {
        if name == "__metadata__" {
            let m = v.as_object().ok_or_else(|| anyhow!("{f}: __metadata__ is not an object"))?;
            for (k, v) in m {
                let s = v.as_str().ok_or_else(|| anyhow!("{f}: __metadata__ value for '{k}' is not a string"))?;
                metadata.insert(k.clone(), s.to_string());
            }
            continue;
        }
        let o = v.as_object().ok_or_else(|| anyhow!("{f}: header entry of tensor '{name}' is not an object"))?;
        let dtype_s = o
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| anyhow!("{f}: tensor '{name}' has no \"dtype\" string"))?;
        let dtype =
            Dtype::parse(dtype_s).ok_or_else(|| anyhow!("{f}: tensor '{name}' has unknown dtype '{dtype_s}'"))?;
        let shape = o
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| anyhow!("{f}: tensor '{name}' has no \"shape\" array"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| anyhow!("{f}: tensor '{name}' has a shape that is not a list of non-negative integers"))?;
        let offs = o
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
            .ok_or_else(|| anyhow!("{f}: tensor '{name}' has no \"data_offsets\" pair of non-negative integers"))?;
        let (begin, end) = offs;
        if begin > end {
            bail!("{f}: tensor '{name}' has data_offsets [{begin}, {end}] with begin after end");
        }
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let nbytes = numel
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| anyhow!("{f}: tensor '{name}' has a shape {shape:?} too large to address"))?;
        if end - begin != nbytes {
            bail!(
                "{f}: tensor '{name}' ({} {shape:?}) needs {nbytes} bytes but its data_offsets [{begin}, {end}] span {} bytes",
                dtype.name(),
                end - begin
            );
        }
        if end > data_len {
            bail!(
                "{f}: tensor '{name}' data_offsets [{begin}, {end}] run past the end of the data buffer ({data_len} bytes); \
                 the file is truncated or its header is wrong"
            );
        }
        entries.push(Entry { name: name.clone(), dtype, shape, begin, end });
    }
    entries.sort_by_key(|e| (e.begin, e.end));
    // Overlaps first (the more specific diagnosis), then holes.
    for w in entries.windows(2) {
        if w[1].begin < w[0].end {
            bail!(
                "{f}: tensor '{}' (bytes {}..{}) overlaps tensor '{}' (bytes {}..{})",
                w[1].name,
                w[1].begin,
                w[1].end,
                w[0].name,
                w[0].begin,
                w[0].end
            );
        }
    }
    let mut pos = 0usize;
    for e in &entries {
        if e.begin > pos {
            bail!(
                "{f}: the data buffer has a hole of {} bytes before tensor '{}' (bytes {pos}..{})",
                e.begin - pos,
                e.name,
                e.begin
            );
        }
        pos = e.end;
    }
    if pos != data_len {
        bail!(
            "{f}: the tensors fill {pos} bytes but the data buffer holds {data_len}: {} unclaimed bytes at the end",
            data_len - pos
        );
    }
    Ok((entries, metadata))
}

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// An opened, validated safetensors file.
pub struct SafeTensors {
    path: PathBuf,
    bytes: Bytes,
    data_start: usize,
    entries: Vec<Entry>,
    metadata: BTreeMap<String, String>,
}

impl SafeTensors {
    /// Opens and validates `path` (memory-mapped).
    pub fn open(path: &Path) -> Result<SafeTensors> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len() as usize;
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only; a file changed underneath us by another process is outside the
            // contract of a checkpoint (saves replace files by rename, which leaves this mapping intact).
            Bytes::Mapped(
                unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?,
            )
        };
        Self::from_bytes_inner(path, bytes)
    }

    /// Validates an in-memory file; `label` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, label: &Path) -> Result<SafeTensors> {
        Self::from_bytes_inner(label, Bytes::Owned(bytes))
    }

    fn from_bytes_inner(path: &Path, bytes: Bytes) -> Result<SafeTensors> {
        let b: &[u8] = match &bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        };
        let f = path.display();
        if b.len() < 8 {
            bail!("{f} is truncated: {} bytes, too short for the 8-byte safetensors header length", b.len());
        }
        let n = u64::from_le_bytes(b[..8].try_into().unwrap());
        if n > (b.len() - 8) as u64 {
            bail!(
                "{f} is truncated or not a safetensors file: its header claims {n} bytes but the file is {} bytes in all",
                b.len()
            );
        }
        let n = n as usize;
        let (entries, metadata) = parse_header(&b[8..8 + n], b.len() - 8 - n, path).map_err(|e| {
            // A buffer shorter than the header says is most likely a truncated file: say so with sizes.
            let data_len = b.len() - 8 - n;
            match serde_json::from_slice::<serde_json::Value>(&b[8..8 + n]).ok().and_then(|v| max_end(&v)) {
                Some(end) if end > data_len => {
                    anyhow!("{e}\n{f} is truncated: expected {} bytes, found {}", 8 + n + end, b.len())
                }
                _ => e,
            }
        })?;
        Ok(SafeTensors { path: path.to_path_buf(), bytes, data_start: 8 + n, entries, metadata })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Raw little-endian bytes of a tensor.
    pub fn raw(&self, e: &Entry) -> &[u8] {
        let b: &[u8] = match &self.bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        };
        &b[self.data_start + e.begin..self.data_start + e.end]
    }

    /// A tensor's values as f32 (from F32, F16, BF16 or F64); errors name the file and tensor.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let e = self.get(name).ok_or_else(|| anyhow!("{}: tensor '{name}' is missing", self.path.display()))?;
        self.read_entry_f32(e)
    }

    pub fn read_entry_f32(&self, e: &Entry) -> Result<Vec<f32>> {
        let raw = self.raw(e);
        Ok(match e.dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::F16 => {
                raw.chunks_exact(2).map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect()
            }
            Dtype::BF16 => {
                raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect()
            }
            Dtype::F64 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            d => bail!(
                "{}: tensor '{}' has dtype {} which is not a floating-point type (expected F32, F16 or BF16)",
                self.path.display(),
                e.name,
                d.name()
            ),
        })
    }
}

fn max_end(v: &serde_json::Value) -> Option<usize> {
    v.as_object()?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.as_array()?.get(1)?.as_u64())
        .max()
        .map(|m| m as usize)
}

/// A tensor to write: its name, shape and f32 values.
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

/// Serialises f32 tensors (in the given order) to a writer, stored as `dtype` (F32, or rounded to the
/// nearest BF16 or F16). The header is space-padded so the data buffer starts 8-byte aligned.
pub fn write<W: Write + ?Sized>(
    w: &mut W,
    tensors: &[TensorRef],
    metadata: &BTreeMap<String, String>,
    dtype: Dtype,
) -> Result<()> {
    let encode: fn(f32, &mut Vec<u8>) = match dtype {
        Dtype::F32 => |x, b| b.extend_from_slice(&x.to_le_bytes()),
        Dtype::BF16 => |x, b| b.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
        Dtype::F16 => |x, b| b.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
        other => bail!("cannot write tensors as {}: only F32, BF16 and F16", other.name()),
    };
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    }
    let mut offset = 0usize;
    for t in tensors {
        let numel: usize = t.shape.iter().product();
        if numel != t.data.len() {
            bail!("tensor '{}': shape {:?} holds {numel} values but {} were given", t.name, t.shape, t.data.len());
        }
        if header.contains_key(t.name) {
            bail!("tensor '{}' is given twice", t.name);
        }
        let end = offset + dtype.size() * numel;
        header.insert(
            t.name.to_string(),
            serde_json::json!({"dtype": dtype.name(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    w.write_all(&(h.len() as u64).to_le_bytes())?;
    w.write_all(&h)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for t in tensors {
        for chunk in t.data.chunks(1 << 14) {
            buf.clear();
            for &x in chunk {
                encode(x, &mut buf);
            }
            w.write_all(&buf)?;
        }
    }
    Ok(())
}

/// Writes tensors to `path` atomically, stored as `dtype` ([`write`]).
pub fn save(path: &Path, tensors: &[TensorRef], metadata: &BTreeMap<String, String>, dtype: Dtype) -> Result<()> {
    crate::util::fs::atomic_write(path, |w| write(w, tensors, metadata, dtype))
}
