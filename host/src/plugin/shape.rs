//! The shape limits: before anything compiles, a linear walk of the
//! component (every core module inside it) refuses one whose shape is over
//! a [`ShapeLimit`]: too many functions, a function body too large, blocks
//! nested too deep, too many locals, modules or instances. The limits are
//! far above what real plugins need (the largest, a 12 MiB JavaScript
//! engine, uses at most half of each) and the check costs tens of
//! milliseconds per megabyte, a few percent of a compile. See
//! [`super::compile`] for the other line of defence.

use wasmparser::{Operator, Parser, Payload};

// ---------------------------------------------------------------- shape

// The values below were measured against the largest real plugin, the
// 12 MiB JavaScript one (SpiderMonkey inside, built by `cargo xtask
// build-js`), which compiles in about 20 s of CPU; the Rust plugins are
// far smaller in every measure. Each limit keeps several times its figure
// as headroom.

/// Functions defined in one component, every core module inside it
/// together. JavaScript plugin: 12,708; Rust plugins: 150 to 350. Each
/// costs the compiler about 70 µs and 7 KiB even when empty: 300,000 empty
/// functions (1.2 MB) take 20 s and 2 GB.
pub const MAX_FUNCTIONS: u64 = 100_000;
/// Bytes of one function body. JavaScript plugin: 171 KB at most; Rust
/// plugins: under 20 KB. Compile time grows faster than the size of one
/// function: 256 KiB of dense code take about 1.3 s, 1 MiB about 14 s.
pub const MAX_FUNCTION_BODY_BYTES: u64 = 1 << 20;
/// Depth of blocks, loops, ifs and `try`s nested inside one function.
/// JavaScript plugin: 456; Rust plugins: 64. Nesting is what makes the
/// compiler slow: 600 KB of blocks nested 200,000 deep compile for a
/// minute, and at this limit in under a second.
pub const MAX_BLOCK_NESTING: u64 = 2_000;
/// Locals declared by all functions of a component together. JavaScript
/// plugin: 51,897. A local takes two bytes to declare and costs the
/// compiler about 50 ns: 80 KB declaring half a billion take 25 s.
pub const MAX_LOCALS: u64 = 1_000_000;
/// Core modules in one component. `wit-component` makes a main module and
/// two or three small adapter and shim modules.
pub const MAX_CORE_MODULES: u64 = 64;
/// Core instances declared in one component (instantiations and bags of
/// exports). Plugins: 17 to 28.
pub const MAX_CORE_INSTANCES: u64 = 256;
/// Components nested inside the component, at any depth. Plugins: one per
/// exported interface, up to 14.
pub const MAX_NESTED_COMPONENTS: u64 = 256;
/// Component instances declared, at any depth. Plugins: as many as nested
/// components.
pub const MAX_COMPONENT_INSTANCES: u64 = 256;

/// One limit on the shape of a component, checked before it compiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeLimit {
    Functions,
    FunctionBodyBytes,
    BlockNesting,
    Locals,
    CoreModules,
    CoreInstances,
    NestedComponents,
    ComponentInstances,
}

impl ShapeLimit {
    /// The host's value of this limit.
    pub fn max(self) -> u64 {
        match self {
            ShapeLimit::Functions => MAX_FUNCTIONS,
            ShapeLimit::FunctionBodyBytes => MAX_FUNCTION_BODY_BYTES,
            ShapeLimit::BlockNesting => MAX_BLOCK_NESTING,
            ShapeLimit::Locals => MAX_LOCALS,
            ShapeLimit::CoreModules => MAX_CORE_MODULES,
            ShapeLimit::CoreInstances => MAX_CORE_INSTANCES,
            ShapeLimit::NestedComponents => MAX_NESTED_COMPONENTS,
            ShapeLimit::ComponentInstances => MAX_COMPONENT_INSTANCES,
        }
    }

    /// The limit's name, as the README's table of limits gives it.
    pub fn name(self) -> &'static str {
        match self {
            ShapeLimit::Functions => "functions per component",
            ShapeLimit::FunctionBodyBytes => "bytes per function body",
            ShapeLimit::BlockNesting => "levels of block nesting per function",
            ShapeLimit::Locals => "locals per component",
            ShapeLimit::CoreModules => "core modules per component",
            ShapeLimit::CoreInstances => "core instances per component",
            ShapeLimit::NestedComponents => "nested components per component",
            ShapeLimit::ComponentInstances => "component instances per component",
        }
    }
}

/// What [`check_shape`] measured of a component (the largest value of each
/// per-function measure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    pub functions: u64,
    pub largest_function_body: u64,
    pub deepest_block_nesting: u64,
    pub most_locals_in_a_function: u64,
    pub locals: u64,
    pub core_modules: u64,
    pub core_instances: u64,
    pub nested_components: u64,
    pub component_instances: u64,
}

/// Where in a component a per-function limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionAt {
    /// The core module, counted from 0 in the order they appear.
    pub module: u64,
    /// The function's index among the module's defined functions.
    pub function: u64,
}

/// Why [`check_shape`] refused a component; nothing was compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// Not parseable as WebAssembly.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Over(#[from] OverLimit),
}

/// A component over one of the [`ShapeLimit`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "too costly to compile: {}{found} {}, over the host's limit of {} {}",
    at.map(|a| format!("function {} of core module {} has ", a.function, a.module)).unwrap_or_else(|| "it has ".into()),
    shape_noun(*limit),
    limit.max(),
    limit.name()
)]
pub struct OverLimit {
    pub limit: ShapeLimit,
    /// What the component has: a count, or for a per-function limit,
    /// the figure of the first function over it.
    pub found: u64,
    /// The function, for a per-function limit.
    pub at: Option<FunctionAt>,
}

fn shape_noun(limit: ShapeLimit) -> &'static str {
    match limit {
        ShapeLimit::Functions => "functions",
        ShapeLimit::FunctionBodyBytes => "bytes of code",
        ShapeLimit::BlockNesting => "levels of block nesting",
        ShapeLimit::Locals => "locals",
        ShapeLimit::CoreModules => "core modules",
        ShapeLimit::CoreInstances => "core instances",
        ShapeLimit::NestedComponents => "nested components",
        ShapeLimit::ComponentInstances => "component instances",
    }
}

/// Measures a component (or a core module) against the [`ShapeLimit`]s,
/// stopping at the first one exceeded. Linear in the size of the bytes,
/// with memory bounded by the nesting limit; no code is compiled.
pub fn check_shape(bytes: &[u8]) -> Result<Shape, ShapeError> {
    let mut shape = Shape::default();
    let over = |limit: ShapeLimit, found: u64, at: Option<FunctionAt>| {
        if found > limit.max() {
            Err(OverLimit { limit, found, at })
        } else {
            Ok(())
        }
    };
    let invalid = |e: wasmparser::BinaryReaderError| ShapeError::Invalid(e.to_string());
    // The core module being read (counted from 0) and its functions so far.
    let mut module: Option<u64> = None;
    let mut function_in_module = 0u64;
    let mut allocations = wasmparser::OperatorsReaderAllocations::default();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::Version {
                encoding: wasmparser::Encoding::Module,
                ..
            } => {
                module = Some(module.map_or(0, |m| m + 1));
                function_in_module = 0;
                // A component counts its core modules at their sections;
                // a bare core module counts itself.
                if shape.core_modules == 0 && shape.nested_components == 0 {
                    shape.core_modules = 1;
                }
            }
            Payload::ModuleSection { .. } => {
                shape.core_modules += 1;
                over(ShapeLimit::CoreModules, shape.core_modules, None)?;
            }
            Payload::ComponentSection { .. } => {
                shape.nested_components += 1;
                over(ShapeLimit::NestedComponents, shape.nested_components, None)?;
            }
            Payload::InstanceSection(reader) => {
                shape.core_instances += u64::from(reader.count());
                over(ShapeLimit::CoreInstances, shape.core_instances, None)?;
            }
            Payload::ComponentInstanceSection(reader) => {
                shape.component_instances += u64::from(reader.count());
                over(
                    ShapeLimit::ComponentInstances,
                    shape.component_instances,
                    None,
                )?;
            }
            // Counted where declared, so a component with too many is
            // refused before a single body is read.
            Payload::FunctionSection(reader) => {
                shape.functions += u64::from(reader.count());
                over(ShapeLimit::Functions, shape.functions, None)?;
            }
            Payload::CodeSectionEntry(body) => {
                let at = Some(FunctionAt {
                    module: module.unwrap_or(0),
                    function: function_in_module,
                });
                function_in_module += 1;
                let size = body.range().len() as u64;
                shape.largest_function_body = shape.largest_function_body.max(size);
                over(ShapeLimit::FunctionBodyBytes, size, at)?;

                let mut locals = 0u64;
                for declared in body.get_locals_reader().map_err(invalid)? {
                    locals += u64::from(declared.map_err(invalid)?.0);
                }
                shape.most_locals_in_a_function = shape.most_locals_in_a_function.max(locals);
                shape.locals += locals;
                over(ShapeLimit::Locals, shape.locals, None)?;

                let mut operators = wasmparser::OperatorsReader::new_with_allocs(
                    body.get_binary_reader_for_operators().map_err(invalid)?,
                    std::mem::take(&mut allocations),
                );
                // The function's own body is depth 1, as its `end` shows.
                let mut depth = 1u64;
                let mut deepest = 1u64;
                while !operators.eof() {
                    match operators.read().map_err(invalid)? {
                        Operator::Block { .. }
                        | Operator::Loop { .. }
                        | Operator::If { .. }
                        | Operator::Try { .. }
                        | Operator::TryTable { .. } => {
                            depth += 1;
                            if depth > deepest {
                                deepest = depth;
                                over(ShapeLimit::BlockNesting, deepest - 1, at)?;
                            }
                        }
                        Operator::End | Operator::Delegate { .. } => {
                            depth = depth.saturating_sub(1);
                        }
                        _ => {}
                    }
                }
                allocations = operators.into_allocations();
                shape.deepest_block_nesting = shape.deepest_block_nesting.max(deepest - 1);
            }
            _ => {}
        }
    }
    Ok(shape)
}

// -------------------------------------------------------------- compiler
