//! Just enough ONNX to read Silero VAD: a hand-written protobuf reader for
//! the `ModelProto` → `GraphProto` → `NodeProto`/`TensorProto` fields the
//! loader looks at (no protoc, no generated code), and the matching writer
//! that tests use to produce small random models.
//!
//! Protobuf wire format: every field is a varint key `(number << 3) | wire`
//! followed by a varint (wire 0), 8 bytes (1), a varint length and that many
//! bytes (2) or 4 bytes (5). Unknown fields are skipped, so files written by
//! newer exporters still load; groups (3, 4) are obsolete and rejected.
//! Repeated numbers may be packed (one wire-2 field) or not (one field per
//! value); both are accepted.

use std::collections::HashMap;

/// ONNX `TensorProto.DataType` codes this reader understands.
pub(crate) const DT_FLOAT: i32 = 1;
pub(crate) const DT_INT64: i32 = 7;

/// A protobuf decoding failure: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError {
    pub offset: usize,
    pub reason: String,
}

type Result<T> = std::result::Result<T, WireError>;

/// A cursor over one message's bytes; `base` is the message's offset in the
/// file so errors point at absolute positions.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn err<T>(&self, reason: impl Into<String>) -> Result<T> {
        Err(WireError {
            offset: self.base + self.pos,
            reason: reason.into(),
        })
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return self.err("varint runs past the end of its message");
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return self.err("varint longer than 64 bits");
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.err("varint longer than 10 bytes")
    }

    /// The next field's (number, wire type), or `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u8)>> {
        if self.at_end() {
            return Ok(None);
        }
        let k = self.varint()?;
        let (field, wire) = (k >> 3, (k & 7) as u8);
        if field == 0 {
            return self.err("field number 0");
        }
        Ok(Some((field, wire)))
    }

    fn take(&mut self, n: usize) -> Result<(&'a [u8], usize)> {
        let start = self.pos;
        if n > self.buf.len() - start {
            return self.err(format!(
                "field of {n} bytes but only {} left in its message",
                self.buf.len() - start
            ));
        }
        self.pos += n;
        Ok((&self.buf[start..start + n], self.base + start))
    }

    /// A length-delimited payload and its absolute offset.
    fn bytes(&mut self) -> Result<(&'a [u8], usize)> {
        let n = self.varint()?;
        let n = usize::try_from(n).or_else(|_| self.err("length does not fit in memory"))?;
        self.take(n)
    }

    fn fixed32(&mut self) -> Result<[u8; 4]> {
        let (b, _) = self.take(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    fn skip(&mut self, wire: u8) -> Result<()> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            w => self.err(format!("unsupported wire type {w}")),
        }
    }

    fn string(&mut self) -> Result<String> {
        let (b, off) = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError {
            offset: off,
            reason: "string field is not UTF-8".into(),
        })
    }

    fn expect_wire(&self, field: u64, wire: u8, want: u8) -> Result<()> {
        if wire == want {
            Ok(())
        } else {
            self.err(format!(
                "field {field} has wire type {wire}, expected {want}"
            ))
        }
    }

    /// Appends one or more int64 values (packed or not) to `out`.
    fn int64s(&mut self, wire: u8, out: &mut Vec<i64>) -> Result<()> {
        match wire {
            0 => out.push(self.varint()? as i64),
            2 => {
                let (b, off) = self.bytes()?;
                let mut r = Reader::new(b, off);
                while !r.at_end() {
                    out.push(r.varint()? as i64);
                }
            }
            w => return self.err(format!("repeated int64 with wire type {w}")),
        }
        Ok(())
    }

    /// Appends one or more f32 values (packed or not) to `out`.
    fn floats(&mut self, wire: u8, out: &mut Vec<f32>) -> Result<()> {
        match wire {
            5 => out.push(f32::from_le_bytes(self.fixed32()?)),
            2 => {
                let (b, off) = self.bytes()?;
                if b.len() % 4 != 0 {
                    return Err(WireError {
                        offset: off,
                        reason: format!("packed floats of {} bytes", b.len()),
                    });
                }
                out.extend(
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            w => return self.err(format!("repeated float with wire type {w}")),
        }
        Ok(())
    }
}

/// The values of an initializer, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    /// A data type this reader does not decode (the code), or data stored
    /// outside the file.
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Initializer {
    pub dims: Vec<i64>,
    pub data: TensorData,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttrValue {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Bytes(Vec<u8>),
    /// Tensors, graphs, string lists: present but not decoded.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(String, AttrValue)>,
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// The parts of an ONNX model the Silero loader needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Model {
    /// `(domain, version)` of each opset import.
    pub opsets: Vec<(String, i64)>,
    pub nodes: Vec<Node>,
    pub initializers: HashMap<String, Initializer>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// Parses a serialized `ModelProto`.
pub(crate) fn parse_model(buf: &[u8]) -> Result<Model> {
    let mut r = Reader::new(buf, 0);
    let mut model = Model::default();
    let mut graphs = 0;
    while let Some((field, wire)) = r.key()? {
        match field {
            // opset_import: OperatorSetIdProto { domain = 1; version = 2 }
            8 => {
                r.expect_wire(field, wire, 2)?;
                let (b, off) = r.bytes()?;
                let mut o = Reader::new(b, off);
                let (mut domain, mut version) = (String::new(), 0i64);
                while let Some((f, w)) = o.key()? {
                    match (f, w) {
                        (1, 2) => domain = o.string()?,
                        (2, 0) => version = o.varint()? as i64,
                        _ => o.skip(w)?,
                    }
                }
                model.opsets.push((domain, version));
            }
            7 => {
                r.expect_wire(field, wire, 2)?;
                let (b, off) = r.bytes()?;
                parse_graph(b, off, &mut model)?;
                graphs += 1;
            }
            _ => r.skip(wire)?,
        }
    }
    if graphs != 1 {
        return Err(WireError {
            offset: 0,
            reason: format!("expected one graph in the model, found {graphs}"),
        });
    }
    Ok(model)
}

fn parse_graph(buf: &[u8], base: usize, model: &mut Model) -> Result<()> {
    let mut r = Reader::new(buf, base);
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                r.expect_wire(field, wire, 2)?;
                let (b, off) = r.bytes()?;
                model.nodes.push(parse_node(b, off)?);
            }
            5 => {
                r.expect_wire(field, wire, 2)?;
                let (b, off) = r.bytes()?;
                let (name, t) = parse_tensor(b, off)?;
                model.initializers.insert(name, t);
            }
            // input / output: ValueInfoProto { name = 1; ... }
            11 | 12 => {
                r.expect_wire(field, wire, 2)?;
                let (b, off) = r.bytes()?;
                let mut v = Reader::new(b, off);
                let mut name = String::new();
                while let Some((f, w)) = v.key()? {
                    match (f, w) {
                        (1, 2) => name = v.string()?,
                        _ => v.skip(w)?,
                    }
                }
                if field == 11 {
                    model.inputs.push(name);
                } else {
                    model.outputs.push(name);
                }
            }
            // sparse_initializer: not used by Silero, but never silently ignore weights.
            15 => {
                return r.err("sparse initializers are not supported");
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(())
}

fn parse_node(buf: &[u8], base: usize) -> Result<Node> {
    let mut r = Reader::new(buf, base);
    let mut node = Node {
        op_type: String::new(),
        domain: String::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        attrs: Vec::new(),
    };
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, 2) => node.inputs.push(r.string()?),
            (2, 2) => node.outputs.push(r.string()?),
            (4, 2) => node.op_type = r.string()?,
            (7, 2) => node.domain = r.string()?,
            (5, 2) => {
                let (b, off) = r.bytes()?;
                node.attrs.push(parse_attr(b, off)?);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(node)
}

fn parse_attr(buf: &[u8], base: usize) -> Result<(String, AttrValue)> {
    let mut r = Reader::new(buf, base);
    let mut name = String::new();
    let (mut int, mut float, mut bytes) = (None, None, None);
    let (mut ints, mut floats) = (Vec::new(), Vec::new());
    let mut ty = 0u64;
    let mut other = false;
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, 2) => name = r.string()?,
            (2, 5) => float = Some(f32::from_le_bytes(r.fixed32()?)),
            (3, 0) => int = Some(r.varint()? as i64),
            (4, 2) => bytes = Some(r.bytes()?.0.to_vec()),
            (7, _) => r.floats(wire, &mut floats)?,
            (8, _) => r.int64s(wire, &mut ints)?,
            (20, 0) => ty = r.varint()?,
            (5 | 6 | 9 | 10 | 11 | 22 | 23, _) => {
                other = true;
                r.skip(wire)?;
            }
            _ => r.skip(wire)?,
        }
    }
    // AttributeType: FLOAT 1, INT 2, STRING 3, FLOATS 6, INTS 7.
    let value = match ty {
        1 => AttrValue::Float(float.unwrap_or(0.0)),
        2 => AttrValue::Int(int.unwrap_or(0)),
        3 => AttrValue::Bytes(bytes.unwrap_or_default()),
        6 => AttrValue::Floats(floats),
        7 => AttrValue::Ints(ints),
        0 if !other => {
            // Old writers omit `type`: infer it from the field present.
            if let Some(i) = int {
                AttrValue::Int(i)
            } else if let Some(f) = float {
                AttrValue::Float(f)
            } else if let Some(b) = bytes {
                AttrValue::Bytes(b)
            } else if !ints.is_empty() {
                AttrValue::Ints(ints)
            } else if !floats.is_empty() {
                AttrValue::Floats(floats)
            } else {
                AttrValue::Other
            }
        }
        _ => AttrValue::Other,
    };
    Ok((name, value))
}

fn parse_tensor(buf: &[u8], base: usize) -> Result<(String, Initializer)> {
    let mut r = Reader::new(buf, base);
    let mut name = String::new();
    let mut dims = Vec::new();
    let mut data_type = 0i32;
    let mut raw: Option<(&[u8], usize)> = None;
    let mut floats = Vec::new();
    let mut int64s = Vec::new();
    let mut external = false;
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => r.int64s(wire, &mut dims)?,
            2 if wire == 0 => data_type = r.varint()? as i32,
            4 => r.floats(wire, &mut floats)?,
            7 => r.int64s(wire, &mut int64s)?,
            8 if wire == 2 => name = r.string()?,
            9 if wire == 2 => raw = Some(r.bytes()?),
            // data_location = 1 (EXTERNAL), or external_data entries.
            14 if wire == 0 => external |= r.varint()? == 1,
            13 => {
                external = true;
                r.skip(wire)?;
            }
            // segment (3) would split a tensor over several protos.
            3 => return r.err(format!("tensor {name:?} is segmented (unsupported)")),
            _ => r.skip(wire)?,
        }
    }
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
        .ok_or_else(|| WireError {
            offset: base,
            reason: format!("tensor {name:?} has invalid dims {dims:?}"),
        })?;
    let data = if external {
        TensorData::Unsupported("data stored in an external file".into())
    } else {
        match (data_type, raw) {
            (DT_FLOAT, Some((b, off))) => {
                if b.len() != count * 4 {
                    return Err(WireError {
                        offset: off,
                        reason: format!(
                            "tensor {name:?} {dims:?} needs {} bytes of float data, has {}",
                            count * 4,
                            b.len()
                        ),
                    });
                }
                TensorData::F32(
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )
            }
            (DT_INT64, Some((b, off))) => {
                if b.len() != count * 8 {
                    return Err(WireError {
                        offset: off,
                        reason: format!(
                            "tensor {name:?} {dims:?} needs {} bytes of int64 data, has {}",
                            count * 8,
                            b.len()
                        ),
                    });
                }
                TensorData::I64(
                    b.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                )
            }
            (DT_FLOAT, None) => TensorData::F32(floats),
            (DT_INT64, None) => TensorData::I64(int64s),
            (t, _) => TensorData::Unsupported(format!("data type {t}")),
        }
    };
    let n = match &data {
        TensorData::F32(v) => Some(v.len()),
        TensorData::I64(v) => Some(v.len()),
        TensorData::Unsupported(_) => None,
    };
    if let Some(n) = n.filter(|&n| n != count) {
        return Err(WireError {
            offset: base,
            reason: format!("tensor {name:?} {dims:?} holds {n} values, expected {count}"),
        });
    }
    Ok((name, Initializer { dims, data }))
}

// ---------------------------------------------------------------------------
// Writer (tests and fixtures): the inverse of the reader, for the same subset.
// ---------------------------------------------------------------------------

#[derive(Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u64, wire: u8) {
        self.varint((field << 3) | u64::from(wire));
    }

    pub fn int(&mut self, field: u64, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }

    pub fn bytes(&mut self, field: u64, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub fn string(&mut self, field: u64, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    pub fn message(&mut self, field: u64, f: impl FnOnce(&mut Writer)) {
        let mut w = Writer::default();
        f(&mut w);
        self.bytes(field, &w.buf);
    }

    pub fn float(&mut self, field: u64, v: f32) {
        self.key(field, 5);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// A graph node for [`write_model`].
pub(crate) struct NodeSpec<'a> {
    pub op: &'a str,
    pub inputs: &'a [&'a str],
    pub outputs: &'a [&'a str],
    pub attrs: Vec<(&'a str, AttrValue)>,
}

/// Serializes a `ModelProto` (opset 18, default domain) with the given
/// nodes, initializers (`raw_data`), graph inputs and outputs.
pub(crate) fn write_model(
    nodes: &[NodeSpec<'_>],
    inits: &[(&str, Vec<i64>, TensorData)],
    inputs: &[&str],
    outputs: &[&str],
) -> Vec<u8> {
    let mut w = Writer::default();
    w.int(1, 8); // ir_version
    w.string(2, "earshot-test");
    w.message(7, |g| {
        for n in nodes {
            g.message(1, |m| {
                for i in n.inputs {
                    m.string(1, i);
                }
                for o in n.outputs {
                    m.string(2, o);
                }
                m.string(4, n.op);
                for (name, v) in &n.attrs {
                    m.message(5, |a| {
                        a.string(1, name);
                        match v {
                            AttrValue::Int(i) => {
                                a.int(3, *i);
                                a.int(20, 2);
                            }
                            AttrValue::Float(f) => {
                                a.float(2, *f);
                                a.int(20, 1);
                            }
                            AttrValue::Bytes(b) => {
                                a.bytes(4, b);
                                a.int(20, 3);
                            }
                            AttrValue::Ints(v) => {
                                // Unpacked, as onnx's Python writer does.
                                for i in v {
                                    a.int(8, *i);
                                }
                                a.int(20, 7);
                            }
                            AttrValue::Floats(v) => {
                                for f in v {
                                    a.float(7, *f);
                                }
                                a.int(20, 6);
                            }
                            AttrValue::Other => {}
                        }
                    });
                }
            });
        }
        g.string(2, "test-graph");
        for (name, dims, data) in inits {
            g.message(5, |t| {
                // Packed dims.
                let mut d = Writer::default();
                for x in dims {
                    d.varint(*x as u64);
                }
                t.bytes(1, &d.buf);
                let (ty, raw): (i64, Vec<u8>) = match data {
                    TensorData::F32(v) => (
                        i64::from(DT_FLOAT),
                        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    ),
                    TensorData::I64(v) => (
                        i64::from(DT_INT64),
                        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    ),
                    TensorData::Unsupported(_) => (0, Vec::new()),
                };
                t.int(2, ty);
                t.string(8, name);
                t.bytes(9, &raw);
            });
        }
        for i in inputs {
            g.message(11, |v| v.string(1, i));
        }
        for o in outputs {
            g.message(12, |v| v.string(1, o));
        }
    });
    w.message(8, |o| {
        o.string(1, "");
        o.int(2, 18);
    });
    w.buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_subset() {
        let nodes = [NodeSpec {
            op: "Conv",
            inputs: &["x", "w"],
            outputs: &["y"],
            attrs: vec![
                ("strides", AttrValue::Ints(vec![2])),
                ("pads", AttrValue::Ints(vec![-1, 1])),
                ("alpha", AttrValue::Float(0.25)),
                ("mode", AttrValue::Bytes(b"reflect".to_vec())),
                ("hidden_size", AttrValue::Int(128)),
            ],
        }];
        let inits = [
            (
                "w",
                vec![2, 3],
                TensorData::F32(vec![1.0, -2.0, 3.5, 0.0, 5.0, 6.0]),
            ),
            ("p", vec![2], TensorData::I64(vec![-7, i64::MAX])),
        ];
        let bytes = write_model(&nodes, &inits, &["x"], &["y"]);
        let m = parse_model(&bytes).unwrap();
        assert_eq!(m.opsets, vec![(String::new(), 18)]);
        assert_eq!(m.inputs, vec!["x"]);
        assert_eq!(m.outputs, vec!["y"]);
        assert_eq!(m.nodes.len(), 1);
        let n = &m.nodes[0];
        assert_eq!(n.op_type, "Conv");
        assert_eq!(n.inputs, vec!["x", "w"]);
        assert_eq!(n.attr("strides"), Some(&AttrValue::Ints(vec![2])));
        assert_eq!(n.attr("pads"), Some(&AttrValue::Ints(vec![-1, 1])));
        assert_eq!(n.attr("alpha"), Some(&AttrValue::Float(0.25)));
        assert_eq!(n.attr("mode"), Some(&AttrValue::Bytes(b"reflect".to_vec())));
        assert_eq!(n.attr("hidden_size"), Some(&AttrValue::Int(128)));
        assert_eq!(m.initializers["w"].dims, vec![2, 3]);
        assert_eq!(
            m.initializers["w"].data,
            TensorData::F32(vec![1.0, -2.0, 3.5, 0.0, 5.0, 6.0])
        );
        assert_eq!(
            m.initializers["p"].data,
            TensorData::I64(vec![-7, i64::MAX])
        );
    }

    #[test]
    fn packed_and_unpacked_repeated_fields_agree() {
        // TensorProto with unpacked dims and float_data instead of raw_data.
        let mut t = Writer::default();
        t.int(1, 2);
        t.int(1, 2);
        t.int(2, i64::from(DT_FLOAT));
        for f in [1.0f32, 2.0, 3.0, 4.0] {
            t.float(4, f);
        }
        t.string(8, "w");
        let (name, init) = parse_tensor(&t.buf, 0).unwrap();
        assert_eq!(name, "w");
        assert_eq!(init.dims, vec![2, 2]);
        assert_eq!(init.data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]));
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let bytes = write_model(
            &[],
            &[("w", vec![4], TensorData::F32(vec![1.0; 4]))],
            &["x"],
            &["y"],
        );
        // Every truncation either parses (a prefix can be a valid message)
        // or fails with an offset inside the buffer.
        for n in 0..bytes.len() {
            if let Err(e) = parse_model(&bytes[..n]) {
                assert!(e.offset <= n, "{e:?} for a {n}-byte prefix");
            }
        }
        // A length that claims more than the file holds.
        let mut w = Writer::default();
        w.key(7, 2);
        w.varint(1 << 40);
        assert!(parse_model(&w.buf).is_err());
        // Wrong data size for the dims.
        let mut t = Writer::default();
        t.int(1, 3);
        t.int(2, i64::from(DT_FLOAT));
        t.bytes(9, &[0u8; 8]);
        assert!(parse_tensor(&t.buf, 0).is_err());
        // Overlong varint.
        assert!(Reader::new(&[0xff; 11], 0).varint().is_err());
    }
}
