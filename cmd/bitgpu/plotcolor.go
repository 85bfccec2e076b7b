package main

import "image/color"

// colorGrey is the fill of baseline series in plots.
var colorGrey = color.RGBA{R: 150, G: 150, B: 150, A: 255}

// colorTernary is the fill of the ternary bars in the kernel time plot, light enough that the
// black error bars show over it.
var colorTernary = color.RGBA{R: 70, G: 130, B: 200, A: 255}

// colorErrorBar draws the min–max error bars.
var colorErrorBar = color.RGBA{A: 255}
