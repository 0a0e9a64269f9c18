// Which points lie inside a box or a lasso, in data coordinates, over every point (drawn
// small, hidden under others or not): the same rules as ui/figures.points_in_polygon.

/** Sorted rows r with eligible[r] (all when eligible is null) inside [x0, x1] × [y0, y1]. */
export function rowsInBox(x, y, eligible, x0, x1, y0, y1) {
  const [left, right] = x0 <= x1 ? [x0, x1] : [x1, x0];
  const [bottom, top] = y0 <= y1 ? [y0, y1] : [y1, y0];
  const rows = [];
  for (let r = 0; r < x.length; r++) {
    if (eligible && !eligible[r]) continue;
    const px = x[r];
    const py = y[r];
    if (px >= left && px <= right && py >= bottom && py <= top) rows.push(r);
  }
  return Uint32Array.from(rows);
}

/** Sorted rows inside the closed polygon (px, py) by the even-odd rule. */
export function rowsInPolygon(x, y, eligible, px, py) {
  let left = Infinity;
  let right = -Infinity;
  let bottom = Infinity;
  let top = -Infinity;
  for (let k = 0; k < px.length; k++) {
    left = Math.min(left, px[k]);
    right = Math.max(right, px[k]);
    bottom = Math.min(bottom, py[k]);
    top = Math.max(top, py[k]);
  }
  const rows = [];
  const m = px.length;
  for (let r = 0; r < x.length; r++) {
    if (eligible && !eligible[r]) continue;
    const qx = x[r];
    const qy = y[r];
    if (qx < left || qx > right || qy < bottom || qy > top) continue;
    let inside = false;
    for (let k = 0; k < m; k++) {
      const x1 = px[k];
      const y1 = py[k];
      const x2 = px[(k + 1) % m];
      const y2 = py[(k + 1) % m];
      if (y1 === y2) continue;
      if ((y1 > qy) !== (y2 > qy) && qx < x1 + ((qy - y1) * (x2 - x1)) / (y2 - y1)) inside = !inside;
    }
    if (inside) rows.push(r);
  }
  return Uint32Array.from(rows);
}
