//! What the evcxr kernel cannot run that a program can: checked on every notebook when its
//! program is built (`build.rs`), so that a cell the kernel would fail on fails the build.
//!
//! evcxr keeps every top-level `let` of a cell for the cells after it, but it cannot keep a
//! closure: its type has no name to store it under. Such a cell fails in the kernel ("The
//! variable `f` is a closure, which cannot be persisted", or "closure may outlive the current
//! function" when it borrows) and keeps **none** of its variables, so the cells after it fail
//! too; as one function body, the program runs it. A closure inside a block, or one stored
//! under a named type (`let f: Box<dyn Fn(f64) -> f64> = Box::new(|x| x)`), is kept.

/// The names bound at the top level of `block` (a cell's statements) to a closure, with the
/// line of each (from 1, counting the block's own first line).
pub fn closure_variables(block: &syn::Block) -> Vec<(String, usize)> {
    block
        .stmts
        .iter()
        .filter_map(|stmt| match stmt {
            syn::Stmt::Local(local) => Some(local),
            _ => None,
        })
        .filter(|local| {
            local
                .init
                .as_ref()
                .is_some_and(|init| is_closure(&init.expr))
        })
        .filter_map(|local| match &local.pat {
            // A named type (`let f: T = …`) is what evcxr stores; any other pattern is not.
            syn::Pat::Type(_) => None,
            pat => Some((
                quote_pattern(pat),
                syn::spanned::Spanned::span(pat).start().line,
            )),
        })
        .collect()
}

/// A closure, also in parentheses or behind a reference (`&|x| x`: a reference to one).
fn is_closure(expr: &syn::Expr) -> bool {
    match expr {
        syn::Expr::Closure(_) => true,
        syn::Expr::Paren(inner) => is_closure(&inner.expr),
        syn::Expr::Reference(inner) => is_closure(&inner.expr),
        _ => false,
    }
}

/// The variable's name (`f`, `mut f`), or `_` for other patterns.
fn quote_pattern(pat: &syn::Pat) -> String {
    match pat {
        syn::Pat::Ident(ident) => ident.ident.to_string(),
        _ => "_".into(),
    }
}
