//! A BTF blob read in place: its types indexed by id, its strings, the
//! types each refers to.

pub(crate) const KIND_INT: u32 = 1;
pub(crate) const KIND_PTR: u32 = 2;
pub(crate) const KIND_ARRAY: u32 = 3;
pub(crate) const KIND_STRUCT: u32 = 4;
pub(crate) const KIND_UNION: u32 = 5;
pub(crate) const KIND_ENUM: u32 = 6;
pub(crate) const KIND_FWD: u32 = 7;
pub(crate) const KIND_TYPEDEF: u32 = 8;
pub(crate) const KIND_VOLATILE: u32 = 9;
pub(crate) const KIND_CONST: u32 = 10;
pub(crate) const KIND_RESTRICT: u32 = 11;
pub(crate) const KIND_FUNC: u32 = 12;
pub(crate) const KIND_FUNC_PROTO: u32 = 13;
pub(crate) const KIND_VAR: u32 = 14;
pub(crate) const KIND_DATASEC: u32 = 15;
pub(crate) const KIND_FLOAT: u32 = 16;
pub(crate) const KIND_DECL_TAG: u32 = 17;
pub(crate) const KIND_TYPE_TAG: u32 = 18;
pub(crate) const KIND_ENUM64: u32 = 19;

pub(crate) const BTF_MAGIC: u16 = 0xeb9f;
pub(crate) const HEADER_LEN: usize = 24;
pub(crate) const TYPE_HEADER_LEN: usize = 12;

pub(crate) fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

pub(crate) fn kind_of(info: u32) -> u32 {
    (info >> 24) & 0x1f
}

pub(crate) fn vlen_of(info: u32) -> usize {
    (info & 0xffff) as usize
}

/// Bytes after the 12-byte header of a type of this kind.
pub(crate) fn extra_len(kind: u32, vlen: usize) -> Result<usize, String> {
    Ok(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        other => return Err(format!("unknown BTF kind {other}")),
    })
}

/// A BTF blob (the kernel's, or a program object's), indexed: `offsets[id]`
/// is where type `id` starts in `types` (`offsets[0]`, void, is unused).
pub(crate) struct RawBtf<'a> {
    pub(crate) types: &'a [u8],
    pub(crate) strings: &'a [u8],
    pub(crate) offsets: Vec<u32>,
}

impl<'a> RawBtf<'a> {
    pub(crate) fn parse(raw: &'a [u8]) -> Result<Self, String> {
        if raw.len() < HEADER_LEN {
            return Err("shorter than a BTF header".into());
        }
        let magic = u16::from_ne_bytes([raw[0], raw[1]]);
        if magic != BTF_MAGIC {
            return Err(format!("bad magic {magic:#06x} (or foreign byte order)"));
        }
        let hdr_len = u32_at(raw, 4)? as usize;
        let section = |off_at: usize| -> Result<&'a [u8], String> {
            let off = hdr_len + u32_at(raw, off_at)? as usize;
            let len = u32_at(raw, off_at + 4)? as usize;
            raw.get(off..off + len)
                .ok_or_else(|| "section out of bounds".to_string())
        };
        let types = section(8)?;
        let strings = section(16)?;
        let mut offsets = vec![0u32];
        let mut at = 0;
        while at < types.len() {
            let info = u32_at(types, at + 4)?;
            offsets.push(at as u32);
            at += TYPE_HEADER_LEN + extra_len(kind_of(info), vlen_of(info))?;
        }
        if at != types.len() {
            return Err("last type runs past the type section".into());
        }
        Ok(Self {
            types,
            strings,
            offsets,
        })
    }

    pub(crate) fn count(&self) -> usize {
        self.offsets.len() - 1
    }

    /// (offset, name_off, info, size_or_type) of type `id` (1..=count).
    pub(crate) fn header(&self, id: u32) -> Result<(usize, u32, u32, u32), String> {
        let at = *self
            .offsets
            .get(id as usize)
            .filter(|_| id != 0)
            .ok_or_else(|| format!("type id {id} out of range"))? as usize;
        Ok((
            at,
            u32_at(self.types, at)?,
            u32_at(self.types, at + 4)?,
            u32_at(self.types, at + 8)?,
        ))
    }

    pub(crate) fn name(&self, name_off: u32) -> &'a [u8] {
        let rest = self.strings.get(name_off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// Whether the string at `name_off` is `name`, without scanning for its
    /// end first (most kernel names differ from every root in byte one).
    pub(crate) fn name_is(&self, name_off: u32, name: &str) -> bool {
        let at = name_off as usize;
        let name = name.as_bytes();
        self.strings.get(at..at + name.len()) == Some(name)
            && self.strings.get(at + name.len()) == Some(&0)
    }

    /// Type ids a type refers to (members, target, element, parameters).
    pub(crate) fn refs(&self, id: u32) -> Result<Vec<u32>, String> {
        let (at, _, info, size_or_type) = self.header(id)?;
        let extra = at + TYPE_HEADER_LEN;
        let vlen = vlen_of(info);
        let mut out = Vec::new();
        match kind_of(info) {
            KIND_PTR | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC
            | KIND_TYPE_TAG | KIND_VAR | KIND_DECL_TAG => out.push(size_or_type),
            KIND_ARRAY => {
                out.push(u32_at(self.types, extra)?);
                out.push(u32_at(self.types, extra + 4)?);
            }
            KIND_STRUCT | KIND_UNION => {
                for i in 0..vlen {
                    out.push(u32_at(self.types, extra + 12 * i + 4)?);
                }
            }
            KIND_FUNC_PROTO => {
                out.push(size_or_type);
                for i in 0..vlen {
                    out.push(u32_at(self.types, extra + 8 * i + 4)?);
                }
            }
            KIND_DATASEC => {
                for i in 0..vlen {
                    out.push(u32_at(self.types, extra + 12 * i)?);
                }
            }
            _ => {}
        }
        Ok(out)
    }
}

/// A struct as a BTF blob lays it out: its size and, per member, its name,
/// byte offset and size.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StructLayout {
    pub size: usize,
    pub members: Vec<(String, usize, usize)>,
}

#[cfg(test)]
impl RawBtf<'_> {
    /// The layout of the struct called `name`; an error if there is none,
    /// or if a member is a bitfield (no record has one).
    pub(crate) fn struct_layout(&self, name: &str) -> Result<StructLayout, String> {
        let id = (1..=self.count() as u32)
            .find(|&id| {
                self.header(id).is_ok_and(|(_, name_off, info, _)| {
                    kind_of(info) == KIND_STRUCT && self.name_is(name_off, name)
                })
            })
            .ok_or_else(|| format!("no struct {name}"))?;
        let (at, _, info, size) = self.header(id)?;
        let kind_flag = info >> 31 == 1;
        let mut members = Vec::new();
        for i in 0..vlen_of(info) {
            let member = at + TYPE_HEADER_LEN + 12 * i;
            let name_off = u32_at(self.types, member)?;
            let type_id = u32_at(self.types, member + 4)?;
            let mut offset = u32_at(self.types, member + 8)?;
            let name = String::from_utf8_lossy(self.name(name_off)).into_owned();
            if kind_flag {
                if offset >> 24 != 0 {
                    return Err(format!("{name} is a bitfield"));
                }
                offset &= 0xff_ffff;
            }
            if offset % 8 != 0 {
                return Err(format!("{name} is not at a whole byte"));
            }
            members.push((name, offset as usize / 8, self.type_size(type_id)?));
        }
        Ok(StructLayout {
            size: size as usize,
            members,
        })
    }

    /// The size in bytes of type `id`, through typedefs and qualifiers.
    fn type_size(&self, id: u32) -> Result<usize, String> {
        let (at, _, info, size_or_type) = self.header(id)?;
        match kind_of(info) {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Ok(size_or_type as usize)
            }
            KIND_PTR => Ok(8),
            KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                self.type_size(size_or_type)
            }
            KIND_ARRAY => {
                let extra = at + TYPE_HEADER_LEN;
                let element = u32_at(self.types, extra)?;
                let n = u32_at(self.types, extra + 8)? as usize;
                Ok(n * self.type_size(element)?)
            }
            kind => Err(format!("type {id} of kind {kind} has no size")),
        }
    }
}
