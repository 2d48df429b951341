//! What the evcxr kernel cannot run that a program can: checked on every notebook when its
//! program is built (`build.rs`), so that a cell the kernel would fail on fails the build.
//!
//! evcxr keeps every top-level `let` of a cell for the cells after it, but it cannot keep a
//! closure: its type has no name to store it under. Such a cell fails in the kernel ("The
//! variable `f` is a closure, which cannot be persisted", or "closure may outlive the current
//! function" when it borrows) and keeps **none** of its variables, so the cells after it fail
//! too; as one function body, the program runs it. A closure inside a block, or one stored
//! under a named type (`let f: Box<dyn Fn(f64) -> f64> = Box::new(|x| x)`), is kept; so is a
//! name the cell binds again later (evcxr keeps the last binding), and `let _ = …` keeps nothing.
//!
//! Two checks. When the program is built, a closure written as the value (also in
//! parentheses, behind `&`, as a block's last expression, or in a tuple bound to a tuple
//! pattern): [`closure_variables`]. evcxr decides from the inferred type, so values that merely
//! hold a closure fail there too: a lazy iterator (`v.iter().map(|x| x * 2)`), `Some(|x| x)`,
//! an unannotated `Box::new(|x| x)`, a function's `impl Fn`, an `async` block, a struct with a
//! closure field. Those the program itself catches when it runs: after the `let` of each name
//! the kernel would keep ([`kept_variables`]), the build inserts a look at the value's type
//! (`std::any::type_name_of_val`), and a type that holds a closure (`{{closure}}`, which is
//! also how an `async` block or function's future is named) fails the cell as the kernel
//! would. Not caught: an opaque type without a closure inside (`fn f() -> impl Iterator` over
//! a plain range), whose concrete name the program sees and evcxr does not.

/// A name a cell binds at its top level, which evcxr keeps for the cells after it.
pub struct Kept {
    /// The variable.
    pub name: String,
    /// Its line, from 1, counting the block's own first line.
    pub line: usize,
    /// The index of its `let` among the block's statements.
    pub stmt: usize,
    /// Whether that `let` gives it a value (`let x;` does not), so that it can be looked at
    /// right after.
    pub initialized: bool,
    /// Whether its value is written as a closure.
    pub closure: bool,
}

/// Every name bound at the top level of `block` (a cell's statements) that evcxr would try to
/// keep: the last binding of each name, `_` aside.
pub fn kept_variables(block: &syn::Block) -> Vec<Kept> {
    let mut bindings: Vec<Kept> = Vec::new();
    for (stmt, statement) in block.stmts.iter().enumerate() {
        if let syn::Stmt::Local(local) = statement {
            let mut names = Vec::new();
            bind(
                &local.pat,
                local.init.as_ref().map(|i| &*i.expr),
                &mut names,
            );
            bindings.extend(names.into_iter().map(|(name, line, closure)| Kept {
                name,
                line,
                stmt,
                initialized: local.init.is_some(),
                closure,
            }));
        }
    }
    let last: Vec<bool> = (0..bindings.len())
        .map(|k| {
            !bindings[k + 1..]
                .iter()
                .any(|later| later.name == bindings[k].name)
        })
        .collect();
    bindings
        .into_iter()
        .zip(last)
        .filter_map(|(kept, last)| last.then_some(kept))
        .collect()
}

/// The names bound at the top level of `block` to a closure written as their value, which
/// evcxr would try to keep, with the line of each (from 1, counting the block's own first
/// line): caught when the program is built.
pub fn closure_variables(block: &syn::Block) -> Vec<(String, usize)> {
    kept_variables(block)
        .into_iter()
        .filter(|kept| kept.closure)
        .map(|kept| (kept.name, kept.line))
        .collect()
}

/// The checks inserted into a cell's code: after the `let` of each name the kernel would keep
/// (and that the `let` gives a value), `::sgm::notebook::keepable(&NAME, "NAME", LINE)?;`, which fails
/// the cell where the value's type holds a closure (`::sgm::notebook::keepable`). As (byte offset in
/// `code`, text), in order.
pub fn keepable_checks(code: &str, block: &syn::Block) -> Vec<(usize, String)> {
    kept_variables(block)
        .into_iter()
        .filter(|kept| kept.initialized)
        .map(|kept| {
            let end = syn::spanned::Spanned::span(&block.stmts[kept.stmt]).end();
            let text = format!(
                " ::sgm::notebook::keepable(&{name}, {name:?}, {line})?;",
                name = kept.name,
                line = kept.line - 1
            );
            (offset(code, end), text)
        })
        .collect()
}

/// The byte offset in `code` of a position in the block parsed from it (one line of its own
/// before the code, so that the code's lines are the block's from 2).
pub fn offset(code: &str, at: proc_macro2::LineColumn) -> usize {
    let line_start: usize = code
        .split_inclusive('\n')
        .take(at.line - 2)
        .map(str::len)
        .sum();
    let line = &code[line_start..];
    let column: usize = line.chars().take(at.column).map(char::len_utf8).sum();
    line_start + column
}

/// Records the names `pat` binds, each with whether its part of `value` is a closure.
fn bind(pat: &syn::Pat, value: Option<&syn::Expr>, out: &mut Vec<(String, usize, bool)>) {
    match pat {
        // A named type is what evcxr stores; `_` in it leaves the closure's type to inference.
        syn::Pat::Type(typed) if has_placeholder(&typed.ty) => bind(&typed.pat, value, out),
        syn::Pat::Type(typed) => bind(&typed.pat, None, out),
        syn::Pat::Ident(ident) => {
            out.push((
                ident.ident.to_string(),
                syn::spanned::Spanned::span(ident).start().line,
                value.is_some_and(is_closure),
            ));
            if let Some((_, inner)) = &ident.subpat {
                bind(inner, None, out);
            }
        }
        syn::Pat::Tuple(tuple) => {
            let values: Option<Vec<&syn::Expr>> = match value.map(unwrap_parens) {
                Some(syn::Expr::Tuple(t)) if t.elems.len() == tuple.elems.len() => {
                    Some(t.elems.iter().collect())
                }
                _ => None,
            };
            for (k, part) in tuple.elems.iter().enumerate() {
                bind(part, values.as_ref().map(|v| v[k]), out);
            }
        }
        syn::Pat::Paren(inner) => bind(&inner.pat, value, out),
        // Names inside other patterns: kept too, their values not looked into.
        syn::Pat::Struct(st) => st.fields.iter().for_each(|f| bind(&f.pat, None, out)),
        syn::Pat::TupleStruct(ts) => ts.elems.iter().for_each(|p| bind(p, None, out)),
        syn::Pat::Slice(slice) => slice.elems.iter().for_each(|p| bind(p, None, out)),
        syn::Pat::Reference(r) => bind(&r.pat, None, out),
        // Every alternative binds the same names.
        syn::Pat::Or(or) => {
            if let Some(first) = or.cases.first() {
                bind(first, None, out);
            }
        }
        _ => {}
    }
}

fn unwrap_parens(expr: &syn::Expr) -> &syn::Expr {
    match expr {
        syn::Expr::Paren(inner) => unwrap_parens(&inner.expr),
        other => other,
    }
}

/// A closure, also in parentheses, behind a reference (`&|x| x`) or as a block's last
/// expression (`{ …; |x| x }`).
fn is_closure(expr: &syn::Expr) -> bool {
    match expr {
        syn::Expr::Closure(_) => true,
        syn::Expr::Paren(inner) => is_closure(&inner.expr),
        syn::Expr::Reference(inner) => is_closure(&inner.expr),
        syn::Expr::Block(block) => match block.block.stmts.last() {
            Some(syn::Stmt::Expr(last, None)) => is_closure(last),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a type leaves a part to inference (`_`, `Box<_>`, `&_`).
fn has_placeholder(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Infer(_) => true,
        syn::Type::Reference(r) => has_placeholder(&r.elem),
        syn::Type::Paren(p) => has_placeholder(&p.elem),
        syn::Type::Group(g) => has_placeholder(&g.elem),
        syn::Type::Array(a) => has_placeholder(&a.elem),
        syn::Type::Slice(s) => has_placeholder(&s.elem),
        syn::Type::Ptr(p) => has_placeholder(&p.elem),
        syn::Type::Tuple(t) => t.elems.iter().any(has_placeholder),
        syn::Type::Path(p) => p
            .path
            .segments
            .iter()
            .any(|segment| match &segment.arguments {
                syn::PathArguments::AngleBracketed(args) => args.args.iter().any(|arg| match arg {
                    syn::GenericArgument::Type(t) => has_placeholder(t),
                    _ => false,
                }),
                _ => false,
            }),
        _ => false,
    }
}
